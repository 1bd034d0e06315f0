// Opens a prediction model's asset page in headless Chromium, as an operator would, and checks that a drawn chart
// of its evaluation report is rendered: the metadata entry LABEL shows "[Show Markdown]"; clicking it opens a
// dialog whose image (a PNG data URI) has loaded with its natural size.
//
// Usage: node ui_charts.js BASE_URL ASSET_PATH LABEL OUT_DIR   (ASSET_PATH like "predictions/churn_model")
// Prints one JSON line with what it found; exits non-zero with a message on any failure (screenshot
// OUT_DIR/charts-failure.png).
const path = require("path");
const { chromium } = require("playwright-core");

const [baseUrl, assetPath, label, outDir] = process.argv.slice(2);

async function shoot(page, name) {
  const file = path.join(outDir, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  try {
    await page.goto(`${baseUrl}/assets/${assetPath}`);
    // The metadata table lists each entry's label in its own cell; the Markdown value is a link in the next one.
    const row = page.locator("tr", { has: page.getByText(label, { exact: true }) }).first();
    await row.waitFor({ state: "visible", timeout: 90000 });
    const link = row.getByText("[Show Markdown]", { exact: true });
    await link.scrollIntoViewIfNeeded();
    await link.click();
    const dialog = page.getByRole("dialog").first();
    const image = dialog.locator('img[src^="data:image/png;base64,"]').first();
    await image.waitFor({ state: "visible", timeout: 30000 });
    await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, await image.elementHandle(), {
      timeout: 30000,
    });
    const drawn = await image.evaluate((img) => ({
      natural_width: img.naturalWidth,
      natural_height: img.naturalHeight,
      shown_width: Math.round(img.getBoundingClientRect().width),
      alt: img.alt,
      src_length: img.src.length,
    }));
    drawn.screenshot = await shoot(page, "prediction-chart");
    console.log(JSON.stringify(drawn));
  } catch (error) {
    await page.screenshot({ path: path.join(outDir, "charts-failure.png") }).catch(() => {});
    console.error(String(error && error.stack ? error.stack : error));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
