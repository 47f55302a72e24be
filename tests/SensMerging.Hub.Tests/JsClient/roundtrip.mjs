// Drives @huggingface/hub against a Hub endpoint: createRepo, uploadFiles (a folder), downloadFile at the new commit,
// a second commit (one file changed), and the first commit read again. Prints one JSON line with what it saw.
// Usage: node roundtrip.mjs HUB_URL TOKEN ORG/NAME FOLDER CHANGED_PATH
import { createRepo, uploadFiles, downloadFile, listFiles } from "@huggingface/hub";
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";

const [hubUrl, accessToken, name, folder, changedPath] = process.argv.slice(2);
const repo = { type: "model", name };
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

async function walk(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full)));
    else out.push(relative(folder, full).split("\\").join("/"));
  }
  return out.sort();
}

async function download(path, revision) {
  const blob = await downloadFile({ repo, path, revision, hubUrl, accessToken });
  if (!blob) throw new Error(`${path}@${revision}: not found`);
  return Buffer.from(await blob.arrayBuffer());
}

const result = { created: null, first: null, second: null, files: {}, oldReadBack: null, listed: [] };
result.created = (await createRepo({ repo, accessToken, hubUrl })).repoUrl;

// The folder as one URL: the client walks it and uploads every file under its relative path.
const first = await uploadFiles({ repo, accessToken, hubUrl, files: [{ path: ".", content: pathToFileURL(folder) }], commitTitle: "first upload" });
result.first = first.commit.oid;
for (const path of await walk(folder)) {
  const local = await readFile(join(folder, path));
  const remote = await download(path, result.first);
  result.files[path] = { size: local.length, local: sha256(local), downloaded: sha256(remote), identical: Buffer.compare(local, remote) === 0 };
}
for await (const entry of listFiles({ repo, revision: result.first, hubUrl, accessToken, recursive: true })) {
  if (entry.type === "file") result.listed.push({ path: entry.path, size: entry.size, lfs: !!entry.lfs });
}

// Second commit: one file changed; the first commit must still serve the old bytes.
const changed = Buffer.from(`changed at ${new Date().toISOString()}\n`);
const second = await uploadFiles({ repo, accessToken, hubUrl, files: [{ path: changedPath, content: new Blob([changed]) }], commitTitle: "second upload" });
result.second = second.commit.oid;
const atSecond = await download(changedPath, result.second);
const atFirst = await download(changedPath, result.first);
const original = await readFile(join(folder, changedPath));
result.oldReadBack = {
  secondIsNew: Buffer.compare(atSecond, changed) === 0,
  firstIsOld: Buffer.compare(atFirst, original) === 0,
  mainIsSecond: Buffer.compare(await download(changedPath, "main"), changed) === 0,
};
console.log(JSON.stringify(result));
