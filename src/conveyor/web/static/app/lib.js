// The page's whole toolkit: Preact with htm (templates without a build step) and the
// graphql-ws client, all vendored (see index.html).
import { Component, h, render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);
export const { createClient } = window.graphqlWs;
export { render, useEffect, useMemo, useRef, useState };

/** `render(props)` as a component that renders again only when a prop changes identity
 *  (Preact's own `memo` lives in preact/compat, which the page does without). */
export function memo(render) {
  return class extends Component {
    shouldComponentUpdate(next) {
      return Object.keys(next).some((key) => next[key] !== this.props[key]);
    }

    render(props) {
      return render(props);
    }
  };
}
