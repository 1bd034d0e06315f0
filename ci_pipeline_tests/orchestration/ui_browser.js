// Drives the Dagster UI in headless Chromium the way an operator would, saving a screenshot of each view:
//   1. the asset graph: click "Materialize all" and wait for the run to succeed;
//   2. launch JOB (a second materialization of ASSET) and wait for it;
//   3. ASSET's page: its row count, and the Columns panel listing every column of its column schema;
//   4. ASSET's metadata as plots (one chart per numeric entry, over both materializations);
//   5. JOB's Runs tab listing the run of step 2;
//   6. every asset group's graph, zoomed out until the whole graph fits the window.
//
// Usage: node ui_browser.js BASE_URL ASSET_PATH JOB OUT_DIR   (ASSET_PATH like "unify/customer_profile")
// Prints one JSON line with what each step found. Exits non-zero with a message on any failure; the screenshot
// of the view that failed is OUT_DIR/failure.png.
const path = require("path");
const { chromium } = require("playwright-core");

const [baseUrl, assetPath, jobName, outDir] = process.argv.slice(2);
const RUN_TIMEOUT_MS = Number(process.env.UI_RUN_TIMEOUT_MS || 600000);
const LOCATION = { repositoryLocationName: "ci_pipeline", repositoryName: "__repository__" };
// How often a run's status is asked for: a query costs the server little, and each poll interval is time the
// scenario may wait after the run has ended.
const POLL_MS = 200;

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
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error("clicking Materialize all started no run within 60 s");
}

async function waitForSuccess(runId) {
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const data = await graphql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", { id: runId });
    const status = data.runOrError.status;
    if (["SUCCESS", "FAILURE", "CANCELED"].includes(status)) {
      if (status !== "SUCCESS") throw new Error(`run ${runId} ended ${status}; see ${baseUrl}/runs/${runId}`);
      return status;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error(`run ${runId} did not finish within ${RUN_TIMEOUT_MS / 1000} s`);
}

async function launchJob(job) {
  const data = await graphql(
    `mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
       __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }`,
    { params: { selector: { ...LOCATION, jobName: job }, runConfigData: {} } },
  );
  const launched = data.launchRun;
  if (launched.__typename !== "LaunchRunSuccess") throw new Error(`launching ${job}: ${JSON.stringify(launched)}`);
  return launched.run.runId;
}

// The asset's materializations (newest first) with their numeric entries, and the columns of its schema.
async function materializations(assetKey) {
  const data = await graphql(
    `query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
       assetMaterializations(limit: 10) { runId metadataEntries { label __typename
         ... on IntMetadataEntry { intValue }
         ... on TableSchemaMetadataEntry { schema { columns { name type } } } } } } } }`,
    { path: assetKey.split("/") },
  );
  return data.assetOrError.assetMaterializations || [];
}

async function shoot(page, name) {
  await page.waitForLoadState("networkidle", { timeout: 10000 }).catch(() => {}); // the UI keeps polling
  const file = path.join(outDir, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

async function assetPage(page, rows, columns) {
  await page.goto(`${baseUrl}/assets/${assetPath}`);
  await page.getByText("Row count", { exact: true }).first().waitFor({ state: "visible", timeout: 60000 });
  const text = await page.locator("body").innerText();
  // The value is the first line under the "Row count" label of the asset's status panel.
  const shown = (text.split("Row count")[1] || "").split("\n").map((line) => line.trim()).find((line) => line);
  if (![rows.toLocaleString("en-US"), String(rows)].includes(shown)) {
    throw new Error(`the page of ${assetPath} shows row count ${JSON.stringify(shown)}, expected ${rows}`);
  }
  const panel = page.getByText("Columns", { exact: true }).first();
  await panel.waitFor({ state: "visible", timeout: 30000 });
  const listed = (text.split("Columns")[1] || "").split("Metadata")[0];
  const missing = columns.filter((name) => !listed.includes(name));
  if (missing.length) throw new Error(`the Columns panel of ${assetPath} does not list ${missing.join(", ")}`);
  await panel.scrollIntoViewIfNeeded();
  return { columns_listed: columns.length, screenshot: await shoot(page, "asset-columns") };
}

async function plots(page) {
  await page.getByText("Plots", { exact: true }).first().click();
  const title = page.getByText("customers", { exact: true }).first();
  await title.waitFor({ state: "visible", timeout: 30000 });
  await page.locator("canvas").first().waitFor({ state: "visible", timeout: 30000 });
  await title.scrollIntoViewIfNeeded();
  return { charts: await page.locator("canvas").count(), screenshot: await shoot(page, "asset-plots") };
}

async function jobRuns(page, runId) {
  await page.goto(`${baseUrl}/locations/ci_pipeline/jobs/${jobName}/runs`);
  await page.getByText(runId.slice(0, 8), { exact: true }).first().waitFor({ state: "visible", timeout: 60000 });
  return { listed: runId.slice(0, 8), screenshot: await shoot(page, "job-runs") };
}

// The graph's bounds and the window's, in screen pixels (the graph is the largest SVG in the viewport), once they
// have stayed the same for `frames` animation frames (the graph is laid out and any centering animation is over);
// given `from` (the graph's bounds before a wheel event), once they differ from those and then stay. Null when
// nothing changed from `from` within `timeout` (the viewport ignored the wheel: it is at its zoom limit). Waiting
// for the page's own frames takes as long as the page needs, where a fixed sleep had to cover the slowest machine.
async function graphSettled(page, { from = null, frames = 6, timeout = 30000 } = {}) {
  try {
    const settled = await page.waitForFunction(
      ({ from, frames }) => {
        const viewport = document.querySelector('[data-svg-viewport="1"]');
        const area = (svg) => Number(svg.getAttribute("width") || 0) * Number(svg.getAttribute("height") || 0);
        const graph = viewport && [...viewport.querySelectorAll("svg")].sort((a, b) => area(b) - area(a))[0];
        if (!graph) return false;
        const r = graph.getBoundingClientRect();
        const key = [r.x, r.y, r.width, r.height].join();
        const state = window.__graphSettled;
        if (from !== null && key === from && !state) return false;
        if (!state || state.key !== key) {
          window.__graphSettled = { key, same: 0 };
          return false;
        }
        state.same += 1;
        if (state.same < frames) return false;
        const box = (b) => ({ x: b.x, y: b.y, width: b.width, height: b.height });
        return { window: box(viewport.getBoundingClientRect()), graph: box(r) };
      },
      { from: from && [from.x, from.y, from.width, from.height].join(), frames },
      { polling: "raf", timeout },
    );
    return await settled.jsonValue();
  } catch (error) {
    if (from !== null && error.name === "TimeoutError") return null;
    throw error;
  } finally {
    await page.evaluate(() => delete window.__graphSettled);
  }
}

function inside({ window: w, graph: g }) {
  return g.x >= w.x - 1 && g.y >= w.y - 1 && g.x + g.width <= w.x + w.width + 1 && g.y + g.height <= w.y + w.height + 1;
}

// Zoom out (ctrl + wheel, as a user would) until the graph is no larger than the window, then center it.
async function fitGraph(page) {
  const viewport = page.locator('[data-svg-viewport="1"]').first();
  await viewport.waitFor({ state: "visible", timeout: 60000 });
  let bounds = await graphSettled(page);
  const center = { x: bounds.window.x + bounds.window.width / 2, y: bounds.window.y + bounds.window.height / 2 };
  // Control is held down over all the wheel notches, as a user zooming out would hold it.
  await page.mouse.move(center.x, center.y);
  await page.keyboard.down("Control");
  for (let i = 0; i < 40 && (bounds.graph.width > bounds.window.width || bounds.graph.height > bounds.window.height); i++) {
    await page.mouse.wheel(0, 100);
    const zoomed = await graphSettled(page, { from: bounds.graph, frames: 1, timeout: 3000 });
    if (!zoomed) break; // at the viewport's smallest zoom: more wheeling changes nothing
    bounds = zoomed;
  }
  await page.keyboard.up("Control");
  // A plain wheel pans the graph by 0.7 of its delta (dragging could click a node and open its side panel).
  for (let i = 0; i < 5; i++) {
    const dx = center.x - (bounds.graph.x + bounds.graph.width / 2);
    const dy = center.y - (bounds.graph.y + bounds.graph.height / 2);
    if (Math.abs(dx) < 2 && Math.abs(dy) < 2) break;
    await page.mouse.wheel(-dx / 0.7, -dy / 0.7);
    bounds = (await graphSettled(page, { from: bounds.graph, frames: 1, timeout: 3000 })) || bounds;
  }
  return bounds;
}

async function groupGraphs(page) {
  const data = await graphql(
    `query($repo: RepositorySelector!) { repositoryOrError(repositorySelector: $repo) {
       ... on Repository { assetGroups { groupName } } } }`,
    { repo: LOCATION },
  );
  const found = {};
  for (const { groupName } of data.repositoryOrError.assetGroups) {
    await page.goto(`${baseUrl}/locations/ci_pipeline/asset-groups/${groupName}`);
    const bounds = await fitGraph(page);
    found[groupName] = {
      fits: inside(bounds),
      scale: +(bounds.graph.width / Math.max(1, bounds.window.width)).toFixed(3),
      screenshot: await shoot(page, `group-${groupName}`),
    };
  }
  return found;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH,
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
    const jobRunId = await launchJob(jobName);
    await waitForSuccess(jobRunId);

    const events = await materializations(assetPath);
    const latest = events[0].metadataEntries;
    const rows = (latest.find((e) => e.label === "dagster/row_count") || {}).intValue;
    const schema = latest.find((e) => e.label === "dagster/column_schema");
    if (rows === undefined || !schema) throw new Error(`${assetPath} has no dagster/row_count or dagster/column_schema`);
    const columns = schema.schema.columns.map((c) => c.name);
    const found = {
      run_id: runId,
      status,
      rows,
      columns,
      job_run_id: jobRunId,
      materializations: events.filter((e) => e.metadataEntries.some((m) => m.label === "customers")).length,
    };
    found.asset = await assetPage(page, rows, columns);
    found.plots = await plots(page);
    found.job_runs = await jobRuns(page, jobRunId);
    found.groups = await groupGraphs(page);
    console.log(JSON.stringify(found));
  } catch (error) {
    await page.screenshot({ path: path.join(outDir, "failure.png") }).catch(() => {});
    console.error(String(error && error.stack ? error.stack : error));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
