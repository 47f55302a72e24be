using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using SensMerging.Hub.Server;

namespace SensMerging.Hub.Tests;

public sealed class HubServerTests
{
    [Fact]
    public async Task Model_info_has_sha_and_siblings_with_lfs()
    {
        Dictionary<string, byte[]> files = [];
        await using var hub = await HubHarness.StartAsync(root => files = Repos.CreateTiny(root));
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress };

        using var doc = JsonDocument.Parse(await http.GetStringAsync("/api/models/acme/tiny"));
        var root = doc.RootElement;
        Assert.Equal("acme/tiny", root.GetProperty("id").GetString());
        Assert.Equal(24, root.GetProperty("_id").GetString()!.Length);
        var sha = root.GetProperty("sha").GetString();
        Assert.True(HubHashing.IsSha1Hex(sha));
        Assert.False(root.GetProperty("private").GetBoolean());
        Assert.Equal(JsonValueKind.False, root.GetProperty("gated").ValueKind);
        Assert.True(DateTimeOffset.TryParse(root.GetProperty("lastModified").GetString(), out _));
        var siblings = root.GetProperty("siblings").EnumerateArray().ToList();
        Assert.Equal(files.Count, siblings.Count);
        var model = siblings.Single(s => s.GetProperty("rfilename").GetString() == "model.safetensors");
        Assert.Equal(Repos.ExpectedEtag("model.safetensors", files["model.safetensors"]), model.GetProperty("lfs").GetProperty("sha256").GetString());
        Assert.Equal(300_000, model.GetProperty("lfs").GetProperty("size").GetInt64());
        var pointer = $"version https://git-lfs.github.com/spec/v1\noid sha256:{model.GetProperty("lfs").GetProperty("sha256").GetString()}\nsize 300000\n";
        Assert.Equal(HubHashing.GitBlobSha1(Encoding.ASCII.GetBytes(pointer)), model.GetProperty("blobId").GetString());
        var config = siblings.Single(s => s.GetProperty("rfilename").GetString() == "config.json");
        Assert.Equal(Repos.ExpectedEtag("config.json", files["config.json"]), config.GetProperty("blobId").GetString());
        Assert.False(config.TryGetProperty("lfs", out _));

        using var byRev = JsonDocument.Parse(await http.GetStringAsync($"/api/models/acme/tiny/revision/{sha}"));
        Assert.Equal(sha, byRev.RootElement.GetProperty("sha").GetString());
        using var head = JsonDocument.Parse(await http.GetStringAsync("/api/models/acme/tiny/revision/HEAD"));
        Assert.Equal(sha, head.RootElement.GetProperty("sha").GetString());
    }

    [Fact]
    public async Task Commit_changes_exactly_when_content_changes()
    {
        await using var hub = await HubHarness.StartAsync();
        var (client, _) = hub.Create();
        var before = (await client.GetModelInfoAsync("acme/tiny")).Sha;
        Assert.Equal(before, (await client.GetModelInfoAsync("acme/tiny")).Sha);

        await File.WriteAllTextAsync(Path.Combine(hub.ReposDir, "acme", "tiny", "README.md"), "# changed\n");
        var after = (await client.GetModelInfoAsync("acme/tiny")).Sha;

        Assert.NotEqual(before, after);
        await Assert.ThrowsAsync<HubRevisionNotFoundException>(() => client.GetModelInfoAsync("acme/tiny", before));
    }

    [Fact]
    public async Task Files_larger_than_a_send_chunk_are_served_whole_and_by_unaligned_ranges()
    {
        var content = Repos.RandomBytes((2 * LargeChunkFileBodyFeature.ChunkSize) + 123_457, 11);
        await using var hub = await HubHarness.StartAsync(root => Repos.WriteFile(Path.Combine(root, "acme", "big"), "w.safetensors", content));
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress };
        const string url = "/acme/big/resolve/main/w.safetensors";

        Assert.Equal(content, await http.GetByteArrayAsync(url));

        foreach (var (from, to) in new (long, long?)[] { (1_234_567, null), (999_999, 2_200_001), (content.Length - 1, null) })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            request.Headers.Range = new RangeHeaderValue(from, to);
            using var response = await http.SendAsync(request);
            long end = (to ?? content.Length - 1) + 1;
            Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
            Assert.Equal(end - from, response.Content.Headers.ContentLength);
            Assert.Equal(content[(int)from..(int)end], await response.Content.ReadAsByteArrayAsync());
        }
    }

    [Fact]
    public async Task Head_and_ranges_answer_like_the_hub()
    {
        Dictionary<string, byte[]> files = [];
        await using var hub = await HubHarness.StartAsync(root => files = Repos.CreateTiny(root));
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress };
        var content = files["model.safetensors"];
        var etag = Repos.ExpectedEtag("model.safetensors", content);
        var commit = JsonDocument.Parse(await http.GetStringAsync("/api/models/acme/tiny")).RootElement.GetProperty("sha").GetString();

        using var head = await http.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/acme/tiny/resolve/main/model.safetensors"));
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Equal($"\"{etag}\"", head.Headers.ETag!.Tag);
        Assert.Equal(commit, head.Headers.GetValues("X-Repo-Commit").Single());
        Assert.Equal(content.Length, head.Content.Headers.ContentLength);
        Assert.Equal("bytes", head.Headers.AcceptRanges.Single());
        Assert.Empty(await head.Content.ReadAsByteArrayAsync());

        using var probe = new HttpRequestMessage(HttpMethod.Get, "/acme/tiny/resolve/main/model.safetensors");
        probe.Headers.Range = new RangeHeaderValue(0, 0);
        using var probed = await http.SendAsync(probe);
        Assert.Equal(HttpStatusCode.PartialContent, probed.StatusCode);
        Assert.Equal($"bytes 0-0/{content.Length}", probed.Content.Headers.ContentRange!.ToString());
        Assert.Equal(content[..1], await probed.Content.ReadAsByteArrayAsync());

        using var tail = new HttpRequestMessage(HttpMethod.Get, "/acme/tiny/resolve/main/model.safetensors");
        tail.Headers.Range = new RangeHeaderValue(1000, null);
        using var tailed = await http.SendAsync(tail);
        Assert.Equal(HttpStatusCode.PartialContent, tailed.StatusCode);
        Assert.Equal(content[1000..], await tailed.Content.ReadAsByteArrayAsync());

        using var mid = new HttpRequestMessage(HttpMethod.Get, "/acme/tiny/resolve/main/model.safetensors");
        mid.Headers.Range = new RangeHeaderValue(10, 19);
        using var middle = await http.SendAsync(mid);
        Assert.Equal($"bytes 10-19/{content.Length}", middle.Content.Headers.ContentRange!.ToString());
        Assert.Equal(content[10..20], await middle.Content.ReadAsByteArrayAsync());

        var small = await http.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/acme/tiny/resolve/main/nested/dir/data.txt"));
        Assert.Equal($"\"{Repos.ExpectedEtag("nested/dir/data.txt", files["nested/dir/data.txt"])}\"", small.Headers.ETag!.Tag);
        var encoded = await http.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/acme/tiny/resolve/main/nested%2Fdir%2Fdata.txt"));
        Assert.Equal(small.Headers.ETag, encoded.Headers.ETag);
    }

    [Theory]
    [InlineData("/api/models/acme/nope", 404, "RepoNotFound")]
    [InlineData("/api/models/acme/tiny/revision/refs%2Fpr%2F9", 404, "RevisionNotFound")]
    [InlineData("/acme/tiny/resolve/main/nope.txt", 404, "EntryNotFound")]
    [InlineData("/api/models/acme/tiny/tree/main/nope", 404, "EntryNotFound")]
    [InlineData("/acme/nope/resolve/main/config.json", 404, "RepoNotFound")]
    public async Task Errors_carry_hub_headers_and_a_json_body(string url, int status, string code)
    {
        await using var hub = await HubHarness.StartAsync();
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress };

        using var response = await http.GetAsync(url);

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal(code, response.Headers.GetValues("X-Error-Code").Single());
        var message = response.Headers.GetValues("X-Error-Message").Single();
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(message, body.RootElement.GetProperty("error").GetString());
        if (code == "RevisionNotFound")
        {
            Assert.Contains("refs/pr/9", message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Paths_info_accepts_json_and_form_bodies()
    {
        await using var hub = await HubHarness.StartAsync();
        using var http = new HttpClient { BaseAddress = hub.Server.BaseAddress };

        using var json = await http.PostAsync("/api/models/acme/tiny/paths-info/main",
            new StringContent("{\"paths\": [\"config.json\", \"nested\", \"missing\"], \"expand\": true}", Encoding.UTF8, "application/json"));
        using var jsonDoc = JsonDocument.Parse(await json.Content.ReadAsStringAsync());
        var entries = jsonDoc.RootElement.EnumerateArray().ToList();
        Assert.Equal(2, entries.Count);
        Assert.Equal("file", entries[0].GetProperty("type").GetString());
        Assert.Equal("directory", entries[1].GetProperty("type").GetString());

        using var form = await http.PostAsync("/api/models/acme/tiny/paths-info/main",
            new FormUrlEncodedContent([new("paths", "model.safetensors"), new("paths", "README.md"), new("expand", "true")]));
        using var formDoc = JsonDocument.Parse(await form.Content.ReadAsStringAsync());
        var formEntries = formDoc.RootElement.EnumerateArray().ToList();
        Assert.Equal(["model.safetensors", "README.md"], formEntries.Select(e => e.GetProperty("path").GetString()));
        Assert.Equal(64, formEntries[0].GetProperty("lfs").GetProperty("oid").GetString()!.Length);

        var (client, _) = hub.Create();
        var info = await client.GetPathsInfoAsync("acme/tiny", "main", ["weights/part.bin", "config.json"]);
        Assert.Equal(2, info.Count);
        Assert.All(info, e => Assert.NotNull(e.Etag));
    }

    [Fact]
    public async Task Non_recursive_tree_lists_one_level_and_a_subfolder()
    {
        await using var hub = await HubHarness.StartAsync();
        var (client, _) = hub.Create();

        var top = await client.ListTreeAsync("acme/tiny", "main", recursive: false);
        var nested = await client.ListTreeAsync("acme/tiny", "main", "nested", recursive: true);

        Assert.Equal(["README.md", "config.json", "model.safetensors", "nested", "tokenizer", "weights"], top.Select(e => e.Path));
        Assert.Equal(["nested/dir", "nested/dir/data.txt"], nested.Select(e => e.Path));
    }

    [Fact]
    public async Task Client_reads_file_metadata_with_head()
    {
        await using var hub = await HubHarness.StartAsync();
        var (client, _) = hub.Create();
        var commit = (await client.GetModelInfoAsync("acme/tiny")).Sha;

        var meta = await client.GetFileMetadataAsync("acme/tiny", "main", "model.safetensors");

        Assert.Equal(commit, meta.Commit);
        Assert.Equal(300_000, meta.Size);
        Assert.Equal(64, meta.Etag!.Length);
        Assert.Equal("abc", SensMerging.Hub.Client.HubClient.NormalizeEtag("W/\"abc\""));
        Assert.Equal("abc", SensMerging.Hub.Client.HubClient.NormalizeEtag("\"abc\""));
    }

    [Fact]
    public async Task Server_lists_repositories_and_hides_marker_files()
    {
        await using var hub = await HubHarness.StartAsync(root =>
        {
            Repos.CreateTiny(root);
            Repos.CreateTiny(root, "other/gated");
            File.WriteAllText(Path.Combine(root, "other", "gated", FolderRepositorySource.GatedMarker), string.Empty);
        });
        var source = new FolderRepositorySource(hub.ReposDir);

        Assert.Equal(["acme/tiny", "other/gated"], await source.ListRepositoriesAsync(CancellationToken.None));
        var lookup = await source.GetRevisionAsync("other/gated", "main", CancellationToken.None);
        Assert.True(lookup.Snapshot!.Access.Gated);
        Assert.DoesNotContain(lookup.Snapshot.Files, f => f.Path.Contains(".hub", StringComparison.Ordinal));
        Assert.Equal(HubRevisionStatus.RepositoryNotFound, (await source.GetRevisionAsync("../etc", "main", CancellationToken.None)).Status);

        var elsewhere = await source.SnapshotFolderAsync("merges/x", Path.Combine(hub.ReposDir, "acme", "tiny"), CancellationToken.None);
        var same = await source.GetRevisionAsync("acme/tiny", "main", CancellationToken.None);
        Assert.Equal(same.Snapshot!.Commit, elsewhere.Commit);
        Assert.Equal("merges/x", elsewhere.RepoId);
        await Assert.ThrowsAsync<DirectoryNotFoundException>(() => source.SnapshotFolderAsync("merges/y", Path.Combine(hub.ReposDir, "nope"), CancellationToken.None));
    }
}
