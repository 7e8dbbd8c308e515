// Opens a page in headless Chromium and prints, as JSON, the first console
// message starting with "hello", for test/e2e/ops/events_test.go.
//
//   node test/js/browser.mjs URL
import { chromium } from "playwright-core";

const url = process.argv[2];
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let code = 0;
try {
  const page = await browser.newPage();
  const logs = [];
  const hello = new Promise((resolve) => {
    page.on("console", (msg) => {
      logs.push(msg.text());
      if (msg.text().startsWith("hello")) resolve(msg.text());
    });
  });
  await page.goto(url, { timeout: 30000 });
  const text = await Promise.race([hello, new Promise((r) => setTimeout(() => r(null), 30000))]);
  const dataset = await page.evaluate(() => document.body.dataset.hello || null);
  process.stdout.write(JSON.stringify({ console: text, dataset, logs }) + "\n");
  if (text === null) code = 1;
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err && err.message ? err.message : err) }) + "\n");
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
