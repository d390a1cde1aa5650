-- The application's schemas; a comment with a semicolon; in it.
CREATE SCHEMA app;
CREATE SCHEMA "audit;log";
COMMENT ON SCHEMA app IS 'The application''s tables; all of them.';
