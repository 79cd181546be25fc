// Parse an AsyncAPI document with the official parser (@asyncapi/parser 3) and print
// one JSON line per diagnostic, then {"document": true|false}.  Node finds the parser
// through NODE_PATH (scripts/bootstrap installs it into .venv/npm/node_modules).
"use strict";
const { Parser, fromFile } = require("@asyncapi/parser");

async function main(path) {
  const { document, diagnostics } = await fromFile(new Parser(), path).parse();
  for (const d of diagnostics) {
    console.log(JSON.stringify({ code: d.code, severity: d.severity, message: d.message, path: d.path }));
  }
  console.log(JSON.stringify({ document: document !== undefined }));
}

main(process.argv[2]).catch((err) => {
  console.error(String(err && err.stack ? err.stack : err));
  process.exit(2);
});
