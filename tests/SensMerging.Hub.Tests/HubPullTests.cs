using System.Text;
using SensMerging.Hub.Client;
using SensMerging.Hub.Server;

namespace SensMerging.Hub.Tests;

public sealed class HubPullTests
{
    [Fact]
    public async Task Pull_multi_file_repo_writes_the_exact_cache_layout()
    {
        Dictionary<string, byte[]> files = [];
        await using var hub = await HubHarness.StartAsync(root => files = Repos.CreateTiny(root));
        var (_, cache) = hub.Create();

        var snap = await cache.PullAsync("acme/tiny", "main");

        var repoDir = hub.RepoCacheDir();
        Assert.Equal(Path.Combine(repoDir, "snapshots", snap.Commit), snap.SnapshotDirectory);
        Assert.True(HubHashing.IsSha1Hex(snap.Commit));
        Assert.Equal(files.Count, snap.Files.Count);
        Assert.Equal(files.Keys.Order(StringComparer.Ordinal), snap.Files.Select(f => f.Path).Order(StringComparer.Ordinal));

        // refs/main holds the commit, no newline.
        Assert.Equal(Encoding.ASCII.GetBytes(snap.Commit), await File.ReadAllBytesAsync(Path.Combine(repoDir, "refs", "main")));

        // Blobs are named by etag and nothing else lives there.
        var expectedEtags = files.ToDictionary(kv => kv.Key, kv => Repos.ExpectedEtag(kv.Key, kv.Value));
        var blobNames = Directory.GetFiles(Path.Combine(repoDir, "blobs")).Select(Path.GetFileName).Order(StringComparer.Ordinal);
        Assert.Equal(expectedEtags.Values.Distinct().Order(StringComparer.Ordinal), blobNames);

        foreach (var (path, content) in files)
        {
            var link = Path.Combine(snap.SnapshotDirectory, path);
            var depth = path.Count(c => c == '/');
            var expectedTarget = string.Concat(Enumerable.Repeat("../", depth + 2)) + "blobs/" + expectedEtags[path];
            Assert.Equal(expectedTarget, new FileInfo(link).LinkTarget);
            Assert.Equal(content, await File.ReadAllBytesAsync(link));
            Assert.Equal(content, await File.ReadAllBytesAsync(Path.Combine(repoDir, "blobs", expectedEtags[path])));
            Assert.True(File.Exists(Path.Combine(hub.CacheDir, ".locks", "models--acme--tiny", expectedEtags[path] + ".lock")));

            var pulled = snap.Files.Single(f => f.Path == path);
            Assert.Equal(content.Length, pulled.Size);
            Assert.Equal(expectedEtags[path], pulled.Etag);
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(content)), pulled.Sha256);
        }

        Assert.Equal("../../blobs/" + expectedEtags["config.json"], new FileInfo(Path.Combine(snap.SnapshotDirectory, "config.json")).LinkTarget);
        Assert.Equal("../../../../blobs/" + expectedEtags["nested/dir/data.txt"], new FileInfo(Path.Combine(snap.SnapshotDirectory, "nested", "dir", "data.txt")).LinkTarget);
        Assert.Empty(Directory.GetFiles(repoDir, "*.incomplete", SearchOption.AllDirectories));
        Assert.Equal(files.Values.Sum(v => (long)v.Length), snap.BytesDownloaded);
    }

    [Fact]
    public async Task Pull_again_downloads_nothing()
    {
        await using var hub = await HubHarness.StartAsync();
        var (_, cache) = hub.Create();
        var first = await cache.PullAsync("acme/tiny");
        var servedBefore = hub.Server.Stats.ResolveGets;

        var second = await cache.PullAsync("acme/tiny");

        Assert.True(first.BytesDownloaded > 0);
        Assert.Equal(0, second.BytesDownloaded);
        Assert.Equal(0, second.FilesDownloaded);
        Assert.Equal(servedBefore, hub.Server.Stats.ResolveGets);
        Assert.Equal(first.Commit, second.Commit);
        Assert.Equal(first.Files.Select(f => f.Sha256), second.Files.Select(f => f.Sha256));
    }

    [Fact]
    public async Task Pull_pinned_commit_writes_no_ref_and_needs_no_request_once_cached()
    {
        await using var hub = await HubHarness.StartAsync();
        var (client, cache) = hub.Create();
        var commit = (await client.GetModelInfoAsync("acme/tiny")).Sha;

        var pinned = await cache.PullAsync("acme/tiny", commit);

        Assert.Equal(commit, pinned.Commit);
        Assert.Empty(Directory.GetFiles(Path.Combine(hub.RepoCacheDir(), "refs"), "*", SearchOption.AllDirectories));
        Assert.Equal(6, pinned.Files.Count);

        var requests = hub.Server.Stats.Requests;
        var again = await cache.PullAsync("acme/tiny", commit, include: ["config.json", "nested/dir/data.txt"]);
        Assert.True(again.ResolvedOffline);
        Assert.Equal(requests, hub.Server.Stats.Requests);
        Assert.Equal(["config.json", "nested/dir/data.txt"], again.Files.Select(f => f.Path));

        var viaEnsure = await cache.EnsureSnapshotAsync("acme/tiny@" + commit, null);
        Assert.Equal(commit, viaEnsure.Commit);
        Assert.Equal(0, viaEnsure.BytesDownloaded);
    }

    [Fact]
    public async Task Nested_ref_and_tag_revisions_are_written_as_refs()
    {
        await using var hub = await HubHarness.StartAsync(wrap: inner => new RewritingSource(inner,
            aliases: new Dictionary<string, string> { ["refs/pr/1"] = "main", ["v1.0"] = "main" }));
        var (_, cache) = hub.Create();

        var pr = await cache.PullAsync("acme/tiny", "refs/pr/1", include: ["*.json"]);
        var tag = await cache.PullAsync("acme/tiny", "v1.0", include: ["*.json"]);

        Assert.Equal(pr.Commit, tag.Commit);
        Assert.Equal(pr.Commit, await File.ReadAllTextAsync(Path.Combine(hub.RepoCacheDir(), "refs", "refs", "pr", "1")));
        Assert.Equal(pr.Commit, await File.ReadAllTextAsync(Path.Combine(hub.RepoCacheDir(), "refs", "v1.0")));
    }

    [Fact]
    public async Task Cancelled_download_resumes_with_a_range_request()
    {
        const int size = 3 * 1024 * 1024;
        await using var hub = await HubHarness.StartAsync(root => Repos.WriteFile(Path.Combine(root, "acme", "big"), "weights.safetensors", Repos.RandomBytes(size, 7)));
        var (_, cache) = hub.Create(o => o.DownloadBufferSize = 64 * 1024);

        using var cts = new CancellationTokenSource();
        var cancelAtHalf = new SyncProgress(p =>
        {
            if (p.State == HubPullFileState.Downloading && p.FileBytes >= size / 2)
            {
                cts.Cancel();
            }
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cache.PullAsync("acme/big", progress: cancelAtHalf, cancellationToken: cts.Token));

        var incomplete = Directory.GetFiles(Path.Combine(hub.RepoCacheDir("acme/big"), "blobs"), "*.incomplete").Single();
        var partial = new FileInfo(incomplete).Length;
        Assert.InRange(partial, size / 2, size - 1);
        var servedBefore = hub.Server.Stats.BytesServed;

        var resumed = await cache.PullAsync("acme/big");

        Assert.Equal(size - partial, resumed.BytesDownloaded);
        Assert.True(resumed.BytesDownloaded < size);
        Assert.True(hub.Server.Stats.BytesServed - servedBefore < size);
        Assert.False(File.Exists(incomplete));
        Assert.Equal(Repos.RandomBytes(size, 7), await File.ReadAllBytesAsync(Path.Combine(resumed.SnapshotDirectory, "weights.safetensors")));
    }

    [Fact]
    public async Task Corrupted_blob_is_detected_and_fetched_again()
    {
        Dictionary<string, byte[]> files = [];
        await using var hub = await HubHarness.StartAsync(root => files = Repos.CreateTiny(root));
        var (_, cache) = hub.Create();
        var first = await cache.PullAsync("acme/tiny");
        var model = first.Files.Single(f => f.Path == "model.safetensors");
        var blob = Path.Combine(hub.RepoCacheDir(), "blobs", model.Etag);
        await using (var fs = new FileStream(blob, FileMode.Open, FileAccess.Write))
        {
            fs.Position = 1000;
            fs.WriteByte((byte)(files["model.safetensors"][1000] ^ 0xFF));
        }

        var second = await cache.PullAsync("acme/tiny");

        Assert.Equal(files["model.safetensors"].Length, second.BytesDownloaded);
        Assert.Equal(1, second.FilesDownloaded);
        Assert.Equal(files["model.safetensors"], await File.ReadAllBytesAsync(blob));
    }

    [Fact]
    public async Task Verified_blobs_are_not_hashed_again_until_they_change()
    {
        Dictionary<string, byte[]> files = [];
        await using var hub = await HubHarness.StartAsync(root => files = Repos.CreateTiny(root));
        var (_, cache) = hub.Create();
        var first = await cache.PullAsync("acme/tiny");
        hub.Logs.Lines.Clear();

        var second = await cache.PullAsync("acme/tiny");

        Assert.Equal(0, second.FilesDownloaded);
        Assert.DoesNotContain(hub.Logs.Lines, l => l.Contains("hashed cached blob", StringComparison.Ordinal));
        Assert.Equal(first.Files.Select(f => f.Sha256), second.Files.Select(f => f.Sha256));
        foreach (var file in first.Files)
        {
            Assert.True(File.Exists(Path.Combine(hub.CacheDir, ".locks", "models--acme--tiny", file.Etag + ".verified")));
        }

        // A blob last verified long ago and corrupted in place afterwards (same size) is still caught.
        var model = first.Files.Single(f => f.Path == "model.safetensors");
        var blob = Path.Combine(hub.RepoCacheDir(), "blobs", model.Etag);
        File.SetLastWriteTimeUtc(blob, DateTime.UtcNow.AddHours(-1));
        hub.Logs.Lines.Clear();
        var third = await cache.PullAsync("acme/tiny");
        Assert.Equal(0, third.FilesDownloaded);
        Assert.Single(hub.Logs.Lines, l => l.Contains("hashed cached blob", StringComparison.Ordinal) && l.Contains(model.Etag, StringComparison.Ordinal));

        await using (var fs = new FileStream(blob, FileMode.Open, FileAccess.Write))
        {
            fs.Position = 12345;
            fs.WriteByte((byte)(files["model.safetensors"][12345] ^ 0x5A));
        }

        var fourth = await cache.PullAsync("acme/tiny");

        Assert.Equal(1, fourth.FilesDownloaded);
        Assert.Equal(files["model.safetensors"].Length, fourth.BytesDownloaded);
        Assert.Equal(files["model.safetensors"], await File.ReadAllBytesAsync(blob));
    }

    [Fact]
    public async Task Offline_resolves_a_cached_repo_and_names_what_is_missing_otherwise()
    {
        await using var hub = await HubHarness.StartAsync();
        var (_, online) = hub.Create();
        var pulled = await online.PullAsync("acme/tiny", include: ["*.json", "nested/**"]);
        var (_, offline) = hub.Create(o => o.Offline = true);
        var requests = hub.Server.Stats.Requests;

        var resolved = await offline.PullAsync("acme/tiny");
        Assert.True(resolved.ResolvedOffline);
        Assert.Equal(pulled.Commit, resolved.Commit);
        Assert.Equal(["config.json", "nested/dir/data.txt"], resolved.Files.Select(f => f.Path));
        Assert.Equal(requests, hub.Server.Stats.Requests);

        var uncached = await Assert.ThrowsAsync<HubOfflineCacheMissException>(() => offline.PullAsync("acme/other", "main"));
        Assert.Contains("acme/other", uncached.Message, StringComparison.Ordinal);
        Assert.Contains(hub.CacheDir, uncached.Message, StringComparison.Ordinal);
        Assert.Contains("main", uncached.Message, StringComparison.Ordinal);

        var missingFile = await Assert.ThrowsAsync<HubOfflineCacheMissException>(() => offline.PullAsync("acme/tiny", include: ["model.safetensors"]));
        Assert.Equal(["model.safetensors"], missingFile.MissingFiles);
        Assert.Contains("model.safetensors", missingFile.Message, StringComparison.Ordinal);

        var missingRev = await Assert.ThrowsAsync<HubOfflineCacheMissException>(() => offline.PullAsync("acme/tiny", "dev"));
        Assert.Contains("'dev'", missingRev.Message, StringComparison.Ordinal);

        var fromEnv = HubOptions.FromEnvironment(n => n switch { "HF_HUB_OFFLINE" => "1", "HF_HUB_CACHE" => hub.CacheDir, _ => null });
        var (_, envOffline) = hub.Create(fromEnv);
        Assert.Equal(pulled.Commit, (await envOffline.PullAsync("acme/tiny")).Commit);
    }

    [Fact]
    public async Task Include_and_exclude_globs_select_files()
    {
        await using var hub = await HubHarness.StartAsync();
        var (_, cache) = hub.Create();

        var snap = await cache.PullAsync("acme/tiny", include: ["*.json", "*.txt", "weights/"], exclude: ["nested/**", "tokenizer/voc?b.txt"]);

        Assert.Equal(["config.json", "weights/part.bin"], snap.Files.Select(f => f.Path).Order(StringComparer.Ordinal));
        Assert.False(Directory.Exists(Path.Combine(snap.SnapshotDirectory, "nested")));
    }

    [Fact]
    public async Task Tree_listing_follows_link_pages()
    {
        await using var hub = await HubHarness.StartAsync(treePageSize: 2);
        var (client, cache) = hub.Create();

        var entries = await client.ListTreeAsync("acme/tiny", "main");
        var snap = await cache.PullAsync("acme/tiny");

        // 6 files + 4 directories (nested, nested/dir, tokenizer, weights) over 5 pages.
        Assert.Equal(10, entries.Count);
        Assert.Equal(6, entries.Count(e => e.IsFile));
        Assert.Equal(4, entries.Count(e => e.Type == "directory"));
        Assert.Equal(entries.Select(e => e.Path).Distinct().Count(), entries.Count);
        Assert.Equal(6, snap.Files.Count);
        Assert.Contains(hub.Logs.Lines, l => l.Contains("in 5 page(s)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Concurrent_pulls_of_the_same_repo_share_blobs_through_locks()
    {
        await using var hub = await HubHarness.StartAsync();
        var (_, a) = hub.Create();
        var (_, b) = hub.Create();

        var results = await Task.WhenAll(a.PullAsync("acme/tiny"), b.PullAsync("acme/tiny"));

        Assert.Equal(results[0].Commit, results[1].Commit);
        foreach (var f in results[0].Files)
        {
            Assert.Equal(f.Sha256, results[1].Files.Single(g => g.Path == f.Path).Sha256);
        }

        Assert.Empty(Directory.GetFiles(Path.Combine(hub.RepoCacheDir(), "blobs"), "*.incomplete"));
    }

    [Fact]
    public async Task Single_file_download_and_ls_report_the_cache()
    {
        await using var hub = await HubHarness.StartAsync();
        var (_, cache) = hub.Create();

        var file = await cache.DownloadFileAsync("acme/tiny", "nested/dir/data.txt");
        Assert.Equal("nested data\n", await File.ReadAllTextAsync(file.LocalPath));
        await cache.PullAsync("acme/tiny", include: ["*.json"]);

        var repo = Assert.Single(cache.ListCached());
        Assert.Equal("acme/tiny", repo.RepoId);
        Assert.Equal("model", repo.RepoType);
        var rev = Assert.Single(repo.Revisions);
        Assert.Equal(["main"], rev.Refs);
        Assert.Equal(2, rev.FileCount);
        Assert.Equal("nested data\n".Length + "{\"hidden_size\": 64}\n".Length, rev.Size);
        Assert.Equal(rev.Size, repo.SizeOnDisk);
    }

    private sealed class SyncProgress(Action<HubPullProgress> onReport) : IProgress<HubPullProgress>
    {
        public void Report(HubPullProgress value) => onReport(value);
    }
}
