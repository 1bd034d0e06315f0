// Drives the Dagster UI in headless Chromium: open the asset graph, click "Materialize all", wait for the run
// to succeed, open an asset and check that its row count is shown, and take a screenshot.
//
// Usage: node ui_materialize.js BASE_URL ASSET_PATH SCREENSHOT   (ASSET_PATH like "unify/customer_profile")
// Prints one JSON line: {"run_id", "status", "rows"}. Exits non-zero with a message on any failure.
const { chromium } = require("playwright-core");

const [baseUrl, assetPath, screenshot] = process.argv.slice(2);
const RUN_TIMEOUT_MS = Number(process.env.UI_RUN_TIMEOUT_MS || 600000);

async function graphql(query, variables = {}) {
  const response = await fetch(`${baseUrl}/graphql`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`GraphQL: ${JSON.stringify(body.errors)}`);
  return body.data;
}

async function runIds() {
  const data = await graphql("{ runsOrError { ... on Runs { results { runId status } } } }");
  return data.runsOrError.results;
}

async function waitForNewRun(before) {
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    const fresh = (await runIds()).filter((run) => !before.has(run.runId));
    if (fresh.length) return fresh[0].runId;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error("clicking Materialize all started no run within 60 s");
}

async function waitForSuccess(runId) {
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const data = await graphql(
      "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
      { id: runId },
    );
    const status = data.runOrError.status;
    if (["SUCCESS", "FAILURE", "CANCELED"].includes(status)) return status;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  throw new Error(`run ${runId} did not finish within ${RUN_TIMEOUT_MS / 1000} s`);
}

async function rowCount(path) {
  const data = await graphql(
    `query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
       assetMaterializations(limit: 1) { metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }`,
    { path: path.split("/") },
  );
  const [latest] = data.assetOrError.assetMaterializations || [];
  const entry = latest && latest.metadataEntries.find((e) => e.label === "dagster/row_count");
  if (!entry) throw new Error(`asset ${path} has no materialization with dagster/row_count`);
  return entry.intValue;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  try {
    const before = new Set((await runIds()).map((run) => run.runId));
    await page.goto(`${baseUrl}/asset-groups`);
    const materialize = page.getByRole("button", { name: /Materialize all/ }).first();
    await materialize.waitFor({ state: "visible", timeout: 90000 });
    await page.waitForTimeout(1000);
    await materialize.click();
    const runId = await waitForNewRun(before);
    const status = await waitForSuccess(runId);
    if (status !== "SUCCESS") throw new Error(`run ${runId} ended ${status}; see ${baseUrl}/runs/${runId}`);
    const rows = await rowCount(assetPath);
    await page.goto(`${baseUrl}/assets/${assetPath}`);
    await page.getByText("Row count", { exact: true }).first().waitFor({ state: "visible", timeout: 60000 });
    // The value is the first line under the "Row count" label of the asset's status panel.
    const text = await page.locator("body").innerText();
    const after = text.split("Row count")[1] || "";
    const value = after.split("\n").map((line) => line.trim()).find((line) => line) || "";
    if (![rows.toLocaleString("en-US"), String(rows)].includes(value)) {
      throw new Error(`the page of ${assetPath} shows row count ${JSON.stringify(value)}, expected ${rows}`);
    }
    // Let the panels that load after the row count finish before the screenshot (the UI keeps polling, so
    // waiting for an idle network may time out; that is fine).
    await page.waitForLoadState("networkidle", { timeout: 15000 }).catch(() => {});
    await page.screenshot({ path: screenshot });
    console.log(JSON.stringify({ run_id: runId, status, rows }));
  } catch (error) {
    await page.screenshot({ path: screenshot }).catch(() => {});
    console.error(String(error && error.stack ? error.stack : error));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
