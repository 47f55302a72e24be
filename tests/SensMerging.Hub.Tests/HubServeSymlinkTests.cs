using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using SensMerging.Hub.Server;

namespace SensMerging.Hub.Tests;

/// <summary>
/// <c>serve</c> and symlinks: only regular files whose real path lies inside the repository (or the cache's blobs/ for
/// a Hub-cache snapshot) are served, with their true sizes and hashes, the same way on every endpoint.
/// </summary>
public sealed class HubServeSymlinkTests
{
    private const string Secret = "root:x:0:0:secret outside the repository\n";

    [Fact]
    public async Task Links_out_of_the_repository_are_neither_listed_nor_served()
    {
        using var outside = new TempDir();
        var secret = Path.Combine(outside.Path, "passwd");
        await File.WriteAllTextAsync(secret, Secret);
        Repos.WriteFile(outside.Path, "dir/inner.txt", Encoding.UTF8.GetBytes(Secret));
        Dictionary<string, byte[]> files = [];
        await using var hub = await HubHarness.StartAsync(root =>
        {
            var repo = Path.Combine(root, "acme", "tiny");
            files = Repos.CreateTiny(root);
            File.CreateSymbolicLink(Path.Combine(repo, "passwd"), secret);                       // absolute link out
            File.CreateSymbolicLink(Path.Combine(repo, "nested", "rel.txt"), "../../../../../" + Path.GetFileName(outside.Path) + "/passwd");
            Directory.CreateSymbolicLink(Path.Combine(repo, "outdir"), Path.Combine(outside.Path, "dir")); // folder link out
            File.CreateSymbolicLink(Path.Combine(repo, "etc-passwd"), "/etc/passwd");
            Directory.CreateSymbolicLink(Path.Combine(root, "acme", "elsewhere"), outside.Path);   // a whole repository out
        });
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress };

        var listed = await TreePathsAsync(http, "acme/tiny");
        Assert.Equal(files.Keys.Order(StringComparer.Ordinal), listed.Where(p => !p.EndsWith('/')));
        using var info = JsonDocument.Parse(await http.GetStringAsync("/api/models/acme/tiny"));
        Assert.Equal(6, info.RootElement.GetProperty("siblings").GetArrayLength());
        using var pathsInfo = await http.PostAsync("/api/models/acme/tiny/paths-info/main",
            new StringContent("{\"paths\": [\"passwd\", \"nested/rel.txt\", \"outdir\", \"outdir/inner.txt\", \"etc-passwd\"]}", Encoding.UTF8, "application/json"));
        Assert.Equal("[]", await pathsInfo.Content.ReadAsStringAsync());

        foreach (var path in new[] { "passwd", "nested/rel.txt", "outdir/inner.txt", "etc-passwd" })
        {
            foreach (var method in new[] { HttpMethod.Get, HttpMethod.Head })
            {
                using var response = await http.SendAsync(new HttpRequestMessage(method, $"/acme/tiny/resolve/main/{path}"));
                Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
                Assert.Equal("EntryNotFound", response.Headers.GetValues("X-Error-Code").Single());
                Assert.DoesNotContain("secret", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }
        }

        using var repos = JsonDocument.Parse(await http.GetStringAsync("/api/models"));
        Assert.DoesNotContain(repos.RootElement.EnumerateArray(), r => r.GetProperty("id").GetString() == "acme/elsewhere");
        using var elsewhere = await http.GetAsync("/acme/elsewhere/resolve/main/passwd");
        Assert.Equal(HttpStatusCode.NotFound, elsewhere.StatusCode);
        Assert.Equal("RepoNotFound", elsewhere.Headers.GetValues("X-Error-Code").Single());
    }

    [Fact]
    public async Task A_link_inside_the_repository_is_served_with_the_true_size_and_hash()
    {
        var weights = Repos.RandomBytes(300_000, 1);
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(weights));
        await using var hub = await HubHarness.StartAsync(root =>
        {
            Repos.CreateTiny(root);
            var repo = Path.Combine(root, "acme", "tiny");
            File.CreateSymbolicLink(Path.Combine(repo, "alias.safetensors"), "model.safetensors");
            Directory.CreateSymbolicLink(Path.Combine(repo, "docs"), "nested/dir");
        });
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress };

        var tree = await TreeAsync(http, "acme/tiny");
        var alias = tree.Single(e => e.GetProperty("path").GetString() == "alias.safetensors");
        Assert.Equal(300_000, alias.GetProperty("size").GetInt64());
        Assert.Equal(sha256, alias.GetProperty("lfs").GetProperty("oid").GetString());
        var linkedDoc = tree.Single(e => e.GetProperty("path").GetString() == "docs/data.txt");
        Assert.Equal("nested data\n".Length, linkedDoc.GetProperty("size").GetInt64());

        using var head = await http.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/acme/tiny/resolve/main/alias.safetensors"));
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Equal(300_000, head.Content.Headers.ContentLength);
        Assert.Equal($"\"{sha256}\"", head.Headers.ETag?.Tag);
        Assert.Equal(weights, await http.GetByteArrayAsync("/acme/tiny/resolve/main/alias.safetensors"));

        using var ranged = new HttpRequestMessage(HttpMethod.Get, "/acme/tiny/resolve/main/alias.safetensors");
        ranged.Headers.Range = new RangeHeaderValue(0, 0);
        using var probe = await http.SendAsync(ranged);
        Assert.Equal("bytes 0-0/300000", probe.Content.Headers.ContentRange?.ToString());

        var (_, cache) = hub.Create();
        var pulled = await cache.PullAsync("acme/tiny", include: ["alias.safetensors", "docs/*"]);
        Assert.Equal(weights, await File.ReadAllBytesAsync(pulled.Files.Single(f => f.Path == "alias.safetensors").LocalPath));
    }

    [Fact]
    public async Task A_hub_cache_snapshot_is_served_with_true_sizes_and_hashes()
    {
        Dictionary<string, byte[]> files = [];
        await using var origin = await HubHarness.StartAsync(root => files = Repos.CreateTiny(root));
        var (_, originCache) = origin.Create();
        var snapshot = await originCache.PullAsync("acme/tiny");

        // Serve the cache's snapshot folder (symlinks into ../../blobs) as repository cached/tiny.
        await using var mirror = await HubHarness.StartAsync(root =>
        {
            Directory.CreateDirectory(Path.Combine(root, "cached"));
            Directory.CreateSymbolicLink(Path.Combine(root, "cached", "tiny"), snapshot.SnapshotDirectory);
        });
        using var http = new HttpClient { BaseAddress = mirror.Server.BaseAddress };

        var tree = await TreeAsync(http, "cached/tiny");
        foreach (var (path, content) in files)
        {
            var entry = tree.Single(e => e.GetProperty("path").GetString() == path);
            Assert.Equal(content.Length, entry.GetProperty("size").GetInt64());
            var etag = entry.TryGetProperty("lfs", out var lfs) ? lfs.GetProperty("oid").GetString() : entry.GetProperty("oid").GetString();
            Assert.Equal(Repos.ExpectedEtag(path, content), etag);
        }

        var (_, cache) = mirror.Create();
        var pulled = await cache.PullAsync("cached/tiny");
        Assert.Equal(files.Count, pulled.Files.Count);
        foreach (var file in pulled.Files)
        {
            Assert.Equal(files[file.Path], await File.ReadAllBytesAsync(file.LocalPath));
            Assert.Equal(files[file.Path].Length, file.Size);
        }

        Assert.Equal(snapshot.Commit, pulled.Commit); // same paths and etags: the same commit id as the origin
    }

    [Fact]
    public async Task Link_loops_and_dangling_links_are_not_found_and_do_not_break_the_repository()
    {
        await using var hub = await HubHarness.StartAsync(root =>
        {
            Repos.CreateTiny(root);
            var repo = Path.Combine(root, "acme", "tiny");
            File.CreateSymbolicLink(Path.Combine(repo, "loop-a"), "loop-b");
            File.CreateSymbolicLink(Path.Combine(repo, "loop-b"), "loop-a");
            File.CreateSymbolicLink(Path.Combine(repo, "self"), "self");
            File.CreateSymbolicLink(Path.Combine(repo, "dangling.bin"), "does-not-exist.bin");
            Directory.CreateSymbolicLink(Path.Combine(repo, "nested", "up"), "..");
        });
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress };

        var listed = await TreePathsAsync(http, "acme/tiny");
        Assert.DoesNotContain(listed, p => p.StartsWith("loop", StringComparison.Ordinal) || p is "self" or "dangling.bin" || p.StartsWith("nested/up", StringComparison.Ordinal));
        Assert.Equal(6, listed.Count(p => !p.EndsWith('/')));

        foreach (var path in new[] { "loop-a", "self", "dangling.bin", "nested/up/config.json" })
        {
            foreach (var method in new[] { HttpMethod.Get, HttpMethod.Head })
            {
                using var response = await http.SendAsync(new HttpRequestMessage(method, $"/acme/tiny/resolve/main/{path}"));
                Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            }
        }

        var (_, cache) = hub.Create();
        Assert.Equal(6, (await cache.PullAsync("acme/tiny")).Files.Count);
    }

    [Fact]
    public async Task A_named_pipe_in_a_repository_is_never_opened()
    {
        await using var hub = await HubHarness.StartAsync(root =>
        {
            Repos.CreateTiny(root);
            using var mkfifo = System.Diagnostics.Process.Start("mkfifo", Path.Combine(root, "acme", "tiny", "pipe"));
            mkfifo.WaitForExit();
            Assert.Equal(0, mkfifo.ExitCode);
        });
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };

        var pipe = (await TreeAsync(http, "acme/tiny")).Single(e => e.GetProperty("path").GetString() == "pipe");
        Assert.Equal(0, pipe.GetProperty("size").GetInt64());
        Assert.Empty(await http.GetByteArrayAsync("/acme/tiny/resolve/main/pipe"));
    }

    private static async Task<List<JsonElement>> TreeAsync(HttpClient http, string repo)
    {
        using var response = await http.GetAsync($"/api/models/{repo}/tree/main?recursive=true");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return [.. doc.RootElement.EnumerateArray().Where(e => e.GetProperty("type").GetString() == "file").Select(e => e.Clone())];
    }

    private static async Task<List<string>> TreePathsAsync(HttpClient http, string repo)
    {
        using var response = await http.GetAsync($"/api/models/{repo}/tree/main?recursive=true");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return [.. doc.RootElement.EnumerateArray()
            .Select(e => e.GetProperty("path").GetString()! + (e.GetProperty("type").GetString() == "directory" ? "/" : string.Empty))
            .Order(StringComparer.Ordinal)];
    }
}
