using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Hub.Client;
using SensMerging.Hub.Server;
using SensMerging.Hub.Server.Auth;
using SensMerging.Hub.Server.Store;

namespace SensMerging.Hub.Tests;

/// <summary>A server with an upload store and a token file (one write token, one read token).</summary>
internal sealed class UploadHarness : IAsyncDisposable
{
    private UploadHarness(TempDir temp, HubRepositoryStore store, HubTokenFile tokens, HubServer server, string writeToken, string readToken)
    {
        Temp = temp;
        Store = store;
        Tokens = tokens;
        Server = server;
        WriteToken = writeToken;
        ReadToken = readToken;
        Http = new HttpClient { BaseAddress = new Uri(server.Endpoint + "/") };
    }

    public TempDir Temp { get; }

    public HubRepositoryStore Store { get; }

    public HubTokenFile Tokens { get; }

    public HubServer Server { get; }

    public string WriteToken { get; }

    public string ReadToken { get; }

    public HttpClient Http { get; }

    public static async Task<UploadHarness> StartAsync(bool readsNeedToken = false, bool withTokens = true)
    {
        var temp = new TempDir();
        var store = new HubRepositoryStore(temp.Sub("store"));
        var tokens = new HubTokenFile(Path.Combine(temp.Path, "tokens.json"));
        var write = await tokens.CreateAsync("alice", HubTokenScope.Write, CancellationToken.None);
        var read = await tokens.CreateAsync("bob", HubTokenScope.Read, CancellationToken.None);
        var source = new StoreRepositorySource(store, t => tokens.Validate(t) is not null);
        var server = await HubServer.StartAsync(source, new HubServerOptions
        {
            Store = store, Tokens = withTokens ? tokens : null, ReadsNeedToken = readsNeedToken,
        });
        return new UploadHarness(temp, store, tokens, server, write, read);
    }

    public HttpRequestMessage Request(HttpMethod method, string path, string? token, HttpContent? content = null)
    {
        var request = new HttpRequestMessage(method, path) { Content = content };
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return request;
    }

    public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, string? token, object? json = null) =>
        await Http.SendAsync(Request(method, path, token, json is null ? null : JsonContent.Create(json)));

    public async Task CreateRepoAsync(string repoId)
    {
        using var response = await SendAsync(HttpMethod.Post, "api/repos/create", WriteToken, new { name = repoId.Split('/')[1], organization = repoId.Split('/')[0] });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    /// <summary>Asks the LFS batch API for an upload of (oid, size); returns the href, or null when the server has it.</summary>
    public async Task<string?> LfsBatchAsync(string repoId, string oid, long size, string? token = null)
    {
        using var response = await SendAsync(HttpMethod.Post, $"{repoId}.git/info/lfs/objects/batch", token ?? WriteToken,
            new { operation = "upload", transfers = new[] { "basic", "multipart" }, hash_algo = "sha_256", objects = new[] { new { oid, size } } });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("basic", doc.RootElement.GetProperty("transfer").GetString());
        var obj = doc.RootElement.GetProperty("objects")[0];
        return obj.TryGetProperty("actions", out var actions) ? actions.GetProperty("upload").GetProperty("href").GetString() : null;
    }

    public async Task<HttpResponseMessage> CommitAsync(string repoId, string token, params object[] lines)
    {
        var body = string.Join('\n', new object[] { new { key = "header", value = new { summary = "test commit" } } }.Concat(lines).Select(l => JsonSerializer.Serialize(l)));
        return await Http.SendAsync(Request(HttpMethod.Post, $"api/models/{repoId}/commit/main", token, new StringContent(body, Encoding.UTF8, "application/x-ndjson")));
    }

    public async Task<JsonElement> ModelInfoAsync(string repoId, string revision = "main")
    {
        using var response = await SendAsync(HttpMethod.Get, $"api/models/{repoId}/revision/{revision}", ReadToken);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        Temp.Dispose();
    }
}

public sealed class HubUploadTests
{
    private static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    private static async Task AssertHubErrorAsync(HttpResponseMessage response, HttpStatusCode status, string messagePart)
    {
        Assert.Equal(status, response.StatusCode);
        var body = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(body);
        Assert.Contains(messagePart, doc.RootElement.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.True(response.Headers.Contains("X-Error-Message"), "the Hub's error header is set");
    }

    [Fact]
    public async Task OfficialJsClient_CreatesUploadsAndDownloadsBitIdentical_SecondCommitKeepsTheFirstReadable_AndHubPullReadsIt()
    {
        await JsClient.EnsureInstalledAsync();
        await using var hub = await UploadHarness.StartAsync();
        var folder = hub.Temp.Sub("model");
        var large = Repos.RandomBytes((10 * 1024 * 1024) + 12345, 7); // over 10 MB: the LFS path
        Repos.WriteFile(folder, "model.safetensors", large);
        Repos.WriteFile(folder, "config.json", Encoding.UTF8.GetBytes("{\"model_type\": \"llama\"}\n"));
        Repos.WriteFile(folder, "docs/notes.txt", Encoding.UTF8.GetBytes("small inline file\n"));

        var (code, stdout, stderr) = await JsClient.RunAsync("node",
            ["roundtrip.mjs", hub.Server.Endpoint, hub.WriteToken, "acme/js-model", folder, "config.json"], TimeSpan.FromMinutes(2));
        Assert.True(code == 0, $"node roundtrip.mjs failed ({code}): {stdout}\n{stderr}");
        Assert.DoesNotContain(hub.WriteToken, stderr, StringComparison.Ordinal);
        using var doc = JsonDocument.Parse(stdout.Trim().Split('\n')[^1]);
        var result = doc.RootElement;
        var files = result.GetProperty("files");
        Assert.Equal(3, files.EnumerateObject().Count());
        foreach (var f in files.EnumerateObject())
        {
            Assert.True(f.Value.GetProperty("identical").GetBoolean(), $"{f.Name} downloaded bit-identical");
        }

        Assert.Equal(Sha256(large), files.GetProperty("model.safetensors").GetProperty("downloaded").GetString());
        var listed = result.GetProperty("listed").EnumerateArray().ToDictionary(e => e.GetProperty("path").GetString()!, e => e.GetProperty("lfs").GetBoolean());
        Assert.True(listed["model.safetensors"], "the large file went through LFS");
        Assert.False(listed["config.json"], "the small file was committed inline");
        Assert.False(listed["docs/notes.txt"]);

        var first = result.GetProperty("first").GetString()!;
        var second = result.GetProperty("second").GetString()!;
        Assert.Matches("^[0-9a-f]{40}$", first);
        Assert.NotEqual(first, second);
        var readBack = result.GetProperty("oldReadBack");
        Assert.True(readBack.GetProperty("secondIsNew").GetBoolean());
        Assert.True(readBack.GetProperty("firstIsOld").GetBoolean(), "the first commit still serves the old bytes");
        Assert.True(readBack.GetProperty("mainIsSecond").GetBoolean());
        Assert.Equal(second, (await hub.ModelInfoAsync("acme/js-model")).GetProperty("sha").GetString());

        // The large blob is stored once, under its SHA-256.
        Assert.Equal(large.Length, new FileInfo(hub.Store.BlobPath(Sha256(large))).Length);

        // sensmerge's own client pulls both commits into the shared cache layout.
        await using var provider = new ServiceCollection().AddLogging()
            .AddHubClient(new HubOptions { Endpoint = hub.Server.Endpoint, CacheDirectory = hub.Temp.Sub("cache"), MaxRetryAttempts = 1 })
            .BuildServiceProvider();
        var cache = provider.GetRequiredService<HubCache>();
        var pulledFirst = await cache.PullAsync("acme/js-model", first);
        Assert.Equal(first, pulledFirst.Commit);
        Assert.Equal(large, await File.ReadAllBytesAsync(Path.Combine(pulledFirst.SnapshotDirectory, "model.safetensors")));
        Assert.Equal(await File.ReadAllBytesAsync(Path.Combine(folder, "config.json")), await File.ReadAllBytesAsync(Path.Combine(pulledFirst.SnapshotDirectory, "config.json")));
        var pulledMain = await cache.PullAsync("acme/js-model");
        Assert.Equal(second, pulledMain.Commit);
        Assert.StartsWith("changed at ", await File.ReadAllTextAsync(Path.Combine(pulledMain.SnapshotDirectory, "config.json")), StringComparison.Ordinal);
        Assert.Equal(0, pulledMain.BytesDownloaded - (await File.ReadAllBytesAsync(Path.Combine(pulledMain.SnapshotDirectory, "config.json"))).Length);
    }

    [Fact]
    public async Task Writes_WithoutToken_WithUnknownToken_WithReadToken_AreRefusedInTheHubErrorShape()
    {
        await using var hub = await UploadHarness.StartAsync();
        var body = new { name = "m", organization = "acme" };
        using (var none = await hub.SendAsync(HttpMethod.Post, "api/repos/create", null, body))
        {
            await AssertHubErrorAsync(none, HttpStatusCode.Unauthorized, "must be authenticated");
        }

        using (var unknown = await hub.SendAsync(HttpMethod.Post, "api/repos/create", "hf_0000", body))
        {
            await AssertHubErrorAsync(unknown, HttpStatusCode.Unauthorized, "Invalid credentials");
        }

        using (var read = await hub.SendAsync(HttpMethod.Post, "api/repos/create", hub.ReadToken, body))
        {
            await AssertHubErrorAsync(read, HttpStatusCode.Forbidden, "read scope");
        }

        Assert.Empty(hub.Store.ListRepositories());
        await hub.CreateRepoAsync("acme/m");
        var content = Encoding.UTF8.GetBytes("hello");
        var file = new { key = "file", value = new { path = "a.txt", content = Convert.ToBase64String(content), encoding = "base64" } };
        using (var read = await hub.CommitAsync("acme/m", hub.ReadToken, file))
        {
            await AssertHubErrorAsync(read, HttpStatusCode.Forbidden, "read scope");
        }

        using (var batch = await hub.SendAsync(HttpMethod.Post, "acme/m.git/info/lfs/objects/batch", hub.ReadToken,
                   new { operation = "upload", objects = new[] { new { oid = Sha256(content), size = 5 } } }))
        {
            await AssertHubErrorAsync(batch, HttpStatusCode.Forbidden, "read scope");
        }

        using (var ok = await hub.CommitAsync("acme/m", hub.WriteToken, file))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }

        // A revoked token stops working at once (the server reads the token file again when it changes).
        Assert.True(await hub.Tokens.RevokeAsync("alice", CancellationToken.None));
        using (var revoked = await hub.CommitAsync("acme/m", hub.WriteToken, file))
        {
            await AssertHubErrorAsync(revoked, HttpStatusCode.Unauthorized, "Invalid credentials");
        }

        var tokenFile = await File.ReadAllTextAsync(hub.Tokens.FilePath);
        Assert.DoesNotContain(hub.ReadToken, tokenFile, StringComparison.Ordinal);
        Assert.Contains(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(hub.ReadToken))), tokenFile, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AServerWithoutTokenFile_RefusesEveryWrite_AndReadsCanRequireAToken()
    {
        await using (var noTokens = await UploadHarness.StartAsync(withTokens: false))
        {
            using var response = await noTokens.SendAsync(HttpMethod.Post, "api/repos/create", noTokens.WriteToken, new { name = "m", organization = "acme" });
            await AssertHubErrorAsync(response, HttpStatusCode.Forbidden, "--tokens");
        }

        await using var closed = await UploadHarness.StartAsync(readsNeedToken: true);
        await closed.CreateRepoAsync("acme/m");
        using (var anonymous = await closed.SendAsync(HttpMethod.Get, "api/models/acme/m", null))
        {
            await AssertHubErrorAsync(anonymous, HttpStatusCode.Unauthorized, "needs a token");
        }

        using var reader = await closed.SendAsync(HttpMethod.Get, "api/models/acme/m", closed.ReadToken);
        Assert.Equal(HttpStatusCode.OK, reader.StatusCode);
    }

    [Fact]
    public async Task ALfsObjectWithTheWrongHash_IsRefusedAndNotStored_AndACommitNamingIt_IsRefused()
    {
        await using var hub = await UploadHarness.StartAsync();
        await hub.CreateRepoAsync("acme/m");
        var before = (await hub.ModelInfoAsync("acme/m")).GetProperty("sha").GetString();
        var announced = Repos.RandomBytes(4096, 1);
        var sent = Repos.RandomBytes(4096, 2);
        var oid = Sha256(announced);
        var href = await hub.LfsBatchAsync("acme/m", oid, announced.Length);
        Assert.NotNull(href);
        using (var put = await hub.Http.PutAsync(href, new ByteArrayContent(sent)))
        {
            await AssertHubErrorAsync(put, HttpStatusCode.BadRequest, "not to the announced oid");
        }

        Assert.False(File.Exists(hub.Store.BlobPath(oid)));
        Assert.False(File.Exists(hub.Store.BlobPath(Sha256(sent))), "the wrong bytes are not kept either");
        Assert.Empty(Directory.EnumerateFileSystemEntries(hub.Store.TempFolder));
        using (var commit = await hub.CommitAsync("acme/m", hub.WriteToken, new { key = "lfsFile", value = new { path = "w.safetensors", algo = "sha256", oid, size = announced.Length } }))
        {
            await AssertHubErrorAsync(commit, (HttpStatusCode)422, "never uploaded");
        }

        Assert.Equal(before, (await hub.ModelInfoAsync("acme/m")).GetProperty("sha").GetString());

        // The right bytes through the same link are stored, then the commit goes through; asking again uploads nothing.
        using (var put = await hub.Http.PutAsync(href, new ByteArrayContent(announced)))
        {
            Assert.Equal(HttpStatusCode.OK, put.StatusCode);
        }

        using (var commit = await hub.CommitAsync("acme/m", hub.WriteToken, new { key = "lfsFile", value = new { path = "w.safetensors", algo = "sha256", oid, size = announced.Length } }))
        {
            Assert.Equal(HttpStatusCode.OK, commit.StatusCode);
        }

        Assert.Null(await hub.LfsBatchAsync("acme/m", oid, announced.Length));
    }

    [Fact]
    public async Task AKilledUpload_LeavesNothingVisible_AndTheSameLinkResumes()
    {
        await using var hub = await UploadHarness.StartAsync();
        await hub.CreateRepoAsync("acme/m");
        var before = (await hub.ModelInfoAsync("acme/m")).GetProperty("sha").GetString();
        var data = Repos.RandomBytes(3 * 1024 * 1024, 3);
        var oid = Sha256(data);
        var href = await hub.LfsBatchAsync("acme/m", oid, data.Length);

        // The client dies after sending a third of the bytes: the connection is cut mid-body.
        using (var cts = new CancellationTokenSource())
        {
            var content = new PushStreamContent(async (stream, ct) =>
            {
                await stream.WriteAsync(data.AsMemory(0, data.Length / 3), ct);
                await stream.FlushAsync(ct);
                await Task.Delay(300, ct);
                await cts.CancelAsync();
                await Task.Delay(Timeout.Infinite, ct);
            }, data.Length);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => hub.Http.PutAsync(href, content, cts.Token));
        }

        // The server notices the cut connection and removes its temporary file; nothing is named by the oid.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (Directory.EnumerateFileSystemEntries(hub.Store.TempFolder).Any() && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Empty(Directory.EnumerateFileSystemEntries(hub.Store.TempFolder));
        Assert.False(File.Exists(hub.Store.BlobPath(oid)));
        Assert.Equal(before, (await hub.ModelInfoAsync("acme/m")).GetProperty("sha").GetString());

        // The upload is asked for again (the server does not have the object) and completes.
        Assert.NotNull(await hub.LfsBatchAsync("acme/m", oid, data.Length));
        using (var put = await hub.Http.PutAsync(href, new ByteArrayContent(data)))
        {
            Assert.Equal(HttpStatusCode.OK, put.StatusCode);
        }

        Assert.True(hub.Store.HasBlob(oid, data.Length));
    }

    [Fact]
    public async Task AStoreOpenedAfterACrash_RemovesLeftOverTemporaryFiles_AndKeepsWholeRepositories()
    {
        using var temp = new TempDir();
        var store = new HubRepositoryStore(temp.Sub("store"));
        await store.CreateRepositoryAsync("acme/m", false, "alice", CancellationToken.None);
        await File.WriteAllBytesAsync(Path.Combine(store.TempFolder, "half-written.tmp"), new byte[100]);
        Directory.CreateDirectory(Path.Combine(store.TempFolder, "half-built-repo"));
        var reopened = new HubRepositoryStore(store.Root);
        Assert.Empty(Directory.EnumerateFileSystemEntries(reopened.TempFolder));
        Assert.Equal(["acme/m"], reopened.ListRepositories());
        Assert.NotNull(await reopened.ResolveAsync("acme/m", "main", CancellationToken.None));
    }

    [Fact]
    public async Task Blobs_AreStoredOnce_Commits_HaveParents_Branches_AndPathsAreChecked()
    {
        using var temp = new TempDir();
        var store = new HubRepositoryStore(temp.Sub("store"));
        await store.CreateRepositoryAsync("acme/a", false, "alice", CancellationToken.None);
        await store.CreateRepositoryAsync("acme/b", false, "alice", CancellationToken.None);
        var data = Repos.RandomBytes(1000, 5);
        var (sha, size) = await store.WriteBlobAsync(new MemoryStream(data), null, null, CancellationToken.None);
        Assert.Equal(Sha256(data), sha);
        await store.WriteBlobAsync(new MemoryStream(data), sha, size, CancellationToken.None);
        var add = new AddFileOperation("w.bin", sha, size, null, Lfs: true);
        var a1 = await store.CommitAsync("acme/a", "main", new CommitRequest("one", null, null, "alice", [add]), CancellationToken.None);
        var b1 = await store.CommitAsync("acme/b", "main", new CommitRequest("one", null, null, "alice", [add with { Path = "x/w.bin" }]), CancellationToken.None);
        Assert.Single(Directory.EnumerateFiles(store.ObjectsFolder, "*", SearchOption.AllDirectories));
        Assert.Equal(Convert.ToHexStringLower(SHA1.HashData(Encoding.ASCII.GetBytes($"blob {HubHashing.LfsPointerText(sha, size).Length}\0{HubHashing.LfsPointerText(sha, size)}"))), a1.Files[0].GitOid);

        var stale = await Assert.ThrowsAsync<HubStoreException>(() => store.CommitAsync("acme/a", "main",
            new CommitRequest("two", null, a1.Parents[0], "alice", [new DeleteFileOperation("w.bin")]), CancellationToken.None));
        Assert.Equal(HubStoreErrorKind.ParentMismatch, stale.Kind);
        var a2 = await store.CommitAsync("acme/a", "main", new CommitRequest("two", null, a1.Id, "alice", [new DeleteFileOperation("w.bin")]), CancellationToken.None);
        Assert.Equal([a1.Id], a2.Parents);
        Assert.Empty(a2.Files);
        Assert.Single((await store.ResolveAsync("acme/a", a1.Id, CancellationToken.None))!.Files);
        Assert.Null(await store.ResolveAsync("acme/a", b1.Id, CancellationToken.None)); // another repository's commit

        Assert.Equal(a1.Id, await store.CreateBranchAsync("acme/a", "release/v1", a1.Id, CancellationToken.None));
        Assert.Single((await store.ResolveAsync("acme/a", "release/v1", CancellationToken.None))!.Files);
        foreach (var bad in new[] { "../x", "/abs", "a//b", ".git/config", "a/./b" })
        {
            var refused = await Assert.ThrowsAsync<HubStoreException>(() => store.CommitAsync("acme/a", "main",
                new CommitRequest("bad", null, null, "alice", [add with { Path = bad }]), CancellationToken.None));
            Assert.Equal(HubStoreErrorKind.BadRequest, refused.Kind);
        }
    }
}

/// <summary>Request content written by a callback (to cut an upload mid-body).</summary>
internal sealed class PushStreamContent(Func<Stream, CancellationToken, Task> write, long length) : HttpContent
{
    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => write(stream, CancellationToken.None);

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken) => write(stream, cancellationToken);

    protected override bool TryComputeLength(out long length1)
    {
        length1 = length;
        return true;
    }
}
