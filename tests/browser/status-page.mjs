// Loads plasmd's status page in Debian's headless Chromium, the way an
// operator opens it on a phone with JavaScript off, and reports what a
// person would see. Used by tests/status_page.rs, which makes the checks.
//
// Usage: node status-page.mjs URL SCREENSHOT_PREFIX
// Prints `key=value` lines, then `--- text ---` and the page's visible text.
import { chromium } from "playwright-core";

const [url, shots] = process.argv.slice(2);
if (!url || !shots) {
  console.error("usage: node status-page.mjs URL SCREENSHOT_PREFIX");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Root in CI: Chromium's sandbox needs user namespaces it may not get.
  args: ["--no-sandbox"],
});
try {
  // A phone, JavaScript off: the page must not need it.
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    javaScriptEnabled: false,
  });
  const page = await phone.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const response = await page.goto(url, { waitUntil: "load" });
  console.log(`status=${response.status()}`);
  console.log(`content_type=${response.headers()["content-type"]}`);
  console.log(`title=${await page.title()}`);
  // Anything other than the page itself (a favicon aside) is an external
  // asset the page was not supposed to have.
  const others = requests.filter((u) => u !== url && !u.endsWith("/favicon.ico"));
  console.log(`other_requests=${others.length} ${others.join(" ")}`);
  const width = await page.evaluate(() => [
    document.documentElement.scrollWidth,
    document.documentElement.clientWidth,
  ]);
  console.log(`phone_overflow=${width[0] > width[1]} (${width[0]} > ${width[1]})`);
  console.log(`scripts=${await page.locator("script").count()}`);
  await page.screenshot({ path: `${shots}-phone.png`, fullPage: true });
  const text = await page.locator("body").innerText();

  // A desktop window, for the record.
  const desk = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await desk.goto(url, { waitUntil: "load" });
  await desk.screenshot({ path: `${shots}-desktop.png`, fullPage: true });

  // Auto-refresh without JavaScript: the page must load again by itself.
  const refreshing = await phone.newPage();
  let loads = 0;
  refreshing.on("load", () => loads++);
  await refreshing.goto(new URL("/?refresh=2", url).href, { waitUntil: "load" });
  await refreshing.waitForTimeout(5000);
  console.log(`refresh_loads=${loads}`);

  console.log("--- text ---");
  console.log(text);
} finally {
  await browser.close();
}
