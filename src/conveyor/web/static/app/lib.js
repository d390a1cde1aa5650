// The page's whole toolkit: Preact with htm (templates without a build step) and the
// graphql-ws client, all vendored (see index.html).
import { h, render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);
export const { createClient } = window.graphqlWs;
export { render, useEffect, useMemo, useRef, useState };
