using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Hub.Client;
using SensMerging.Hub.Server;

namespace SensMerging.Hub.Tests;

public sealed class HubErrorTests
{
    private const string SecretToken = "hf_SuperSecretToken1234567890";
    private const string WrongToken = "hf_WrongButAlsoSecret0987654321";

    [Fact]
    public async Task Repository_not_found_names_the_repo()
    {
        await using var hub = await HubHarness.StartAsync();
        var (_, cache) = hub.Create();

        var ex = await Assert.ThrowsAsync<HubRepositoryNotFoundException>(() => cache.PullAsync("acme/missing"));

        Assert.Contains("'acme/missing'", ex.Message, StringComparison.Ordinal);
        Assert.Equal(404, ex.StatusCode);
    }

    [Fact]
    public async Task Revision_not_found_names_repo_and_revision()
    {
        await using var hub = await HubHarness.StartAsync();
        var (_, cache) = hub.Create();

        var ex = await Assert.ThrowsAsync<HubRevisionNotFoundException>(() => cache.PullAsync("acme/tiny", "no-such-branch"));

        Assert.Contains("'no-such-branch'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'acme/tiny'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task File_not_found_leaves_a_no_exist_marker()
    {
        await using var hub = await HubHarness.StartAsync();
        var (client, cache) = hub.Create();
        var commit = (await client.GetModelInfoAsync("acme/tiny")).Sha;

        var ex = await Assert.ThrowsAsync<HubEntryNotFoundException>(() => cache.DownloadFileAsync("acme/tiny", "sub/missing.txt"));

        Assert.Contains("'sub/missing.txt'", ex.Message, StringComparison.Ordinal);
        Assert.Equal(commit, ex.Commit);
        var marker = Path.Combine(hub.RepoCacheDir(), ".no_exist", commit, "sub", "missing.txt");
        Assert.True(File.Exists(marker));
        Assert.Equal(0, new FileInfo(marker).Length);
        Assert.Equal(commit, await File.ReadAllTextAsync(Path.Combine(hub.RepoCacheDir(), "refs", "main")));

        // Pinned to the commit, the marker answers without a request.
        var requests = hub.Server.Stats.Requests;
        await Assert.ThrowsAsync<HubEntryNotFoundException>(() => cache.DownloadFileAsync("acme/tiny", "sub/missing.txt", commit));
        Assert.Equal(requests, hub.Server.Stats.Requests);
    }

    [Fact]
    public async Task Gated_repo_needs_a_granted_token()
    {
        await using var hub = await HubHarness.StartAsync(root =>
        {
            Repos.CreateTiny(root, "acme/gated");
            File.WriteAllText(Path.Combine(root, "acme", "gated", FolderRepositorySource.GatedMarker), SecretToken + "\n");
        });

        var (_, anonymous) = hub.Create();
        var ex = await Assert.ThrowsAsync<HubGatedRepoException>(() => anonymous.PullAsync("acme/gated"));
        Assert.Contains("'acme/gated' is gated", ex.Message, StringComparison.Ordinal);
        Assert.Equal(401, ex.StatusCode);

        var (_, notGranted) = hub.Create(o => o.Token = WrongToken);
        var forbidden = await Assert.ThrowsAsync<HubGatedRepoException>(() => notGranted.PullAsync("acme/gated"));
        Assert.Equal(403, forbidden.StatusCode);

        var (_, granted) = hub.Create(o => o.Token = SecretToken);
        var snap = await granted.PullAsync("acme/gated");
        Assert.Equal(6, snap.Files.Count);
        Assert.DoesNotContain(snap.Files, f => f.Path.StartsWith(".hub", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Private_repo_rejects_bad_tokens_and_hides_from_anonymous_callers()
    {
        await using var hub = await HubHarness.StartAsync(root =>
        {
            Repos.CreateTiny(root, "acme/private");
            File.WriteAllText(Path.Combine(root, "acme", "private", FolderRepositorySource.PrivateMarker), SecretToken);
        });

        var (_, wrong) = hub.Create(o => o.Token = WrongToken);
        var unauthorized = await Assert.ThrowsAsync<HubUnauthorizedException>(() => wrong.PullAsync("acme/private"));
        Assert.Contains("rejected the credentials", unauthorized.Message, StringComparison.Ordinal);
        Assert.Contains("'acme/private'", unauthorized.Message, StringComparison.Ordinal);

        var (_, anonymous) = hub.Create();
        var hidden = await Assert.ThrowsAsync<HubRepositoryNotFoundException>(() => anonymous.PullAsync("acme/private"));
        Assert.Equal(401, hidden.StatusCode);

        var (_, good) = hub.Create(o => o.Token = SecretToken);
        Assert.Equal(6, (await good.PullAsync("acme/private")).Files.Count);
    }

    [Fact]
    public async Task Token_never_appears_in_logs_or_exception_messages()
    {
        await using var hub = await HubHarness.StartAsync(root =>
        {
            Repos.CreateTiny(root, "acme/private");
            File.WriteAllText(Path.Combine(root, "acme", "private", FolderRepositorySource.PrivateMarker), SecretToken);
        });
        var messages = new List<string>();
        var (client, good) = hub.Create(o => o.Token = SecretToken);
        var (_, bad) = hub.Create(o => o.Token = WrongToken);
        var (_, unreachable) = hub.Create(o =>
        {
            o.Token = SecretToken;
            o.Endpoint = "http://127.0.0.1:" + FreePort();
        });
        var options = client.Options;

        await good.PullAsync("acme/private");
        await client.GetPathsInfoAsync("acme/private", "main", ["config.json"]);
        await client.GetFileMetadataAsync("acme/private", "main", "config.json");
        foreach (var failing in new Func<Task>[]
        {
            () => bad.PullAsync("acme/private"),
            () => good.PullAsync("acme/private", "nope"),
            () => good.DownloadFileAsync("acme/private", "missing.txt"),
            () => unreachable.PullAsync("acme/private"),
        })
        {
            var ex = await Assert.ThrowsAnyAsync<HubException>(failing);
            for (Exception? e = ex; e is not null; e = e.InnerException)
            {
                messages.Add(e.Message);
                messages.Add(e.ToString());
            }
        }

        Assert.NotEmpty(hub.Logs.Lines);
        Assert.Contains(hub.Logs.Lines, l => l.Contains("Authorization", StringComparison.OrdinalIgnoreCase));
        foreach (var line in hub.Logs.Lines.Concat(messages).Append(options.ToString()))
        {
            Assert.DoesNotContain(SecretToken, line, StringComparison.Ordinal);
            Assert.DoesNotContain(WrongToken, line, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Checksum_mismatch_from_a_lying_server_is_refused()
    {
        var lie = Convert.ToHexStringLower(SHA256.HashData("not the content"u8));
        await using var hub = await HubHarness.StartAsync(wrap: inner => new RewritingSource(inner, s => s with
        {
            Files = [.. s.Files.Select(f => f.Path == "model.safetensors" ? f with { Sha256 = lie } : f)],
        }));
        var (_, cache) = hub.Create();

        var ex = await Assert.ThrowsAsync<HubChecksumMismatchException>(() => cache.PullAsync("acme/tiny"));

        Assert.Equal(lie, ex.Expected);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Repos.RandomBytes(300_000, 1))), ex.Actual);
        Assert.Contains("'model.safetensors'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(lie, ex.Message, StringComparison.Ordinal);
        var blobs = Path.Combine(hub.RepoCacheDir(), "blobs");
        Assert.False(File.Exists(Path.Combine(blobs, lie)));
        Assert.False(File.Exists(Path.Combine(blobs, lie + ".incomplete")));
    }

    [Fact]
    public async Task Server_unreachable_says_which_endpoint()
    {
        using var temp = new TempDir();
        var endpoint = "http://127.0.0.1:" + FreePort();
        using var provider = new ServiceCollection()
            .AddHubClient(new HubOptions { Endpoint = endpoint, CacheDirectory = temp.Path, MaxRetryAttempts = 1, RetryBaseDelay = TimeSpan.FromMilliseconds(5) })
            .BuildServiceProvider();
        var cache = provider.GetRequiredService<HubCache>();

        var ex = await Assert.ThrowsAsync<HubServerUnreachableException>(() => cache.PullAsync("acme/tiny"));

        Assert.Contains(endpoint, ex.Message, StringComparison.Ordinal);
        Assert.Contains("'acme/tiny'", ex.Message, StringComparison.Ordinal);
        Assert.IsType<HttpRequestException>(ex.InnerException);
    }

    [Fact]
    public async Task Path_traversal_names_from_a_malicious_server_are_refused()
    {
        using var outside = new TempDir();
        var evil = Path.Combine(outside.Path, "evil.txt");
        await File.WriteAllTextAsync(evil, "pwned");
        var evilFile = new HubRepositoryFile("../../../evil.txt", 5, HubHashing.GitBlobSha1("pwned"u8), null, false, evil);
        await using var hub = await HubHarness.StartAsync(wrap: inner => new RewritingSource(inner, s => s with { Files = [.. s.Files, evilFile] }));
        var (_, cache) = hub.Create();

        var ex = await Assert.ThrowsAsync<HubUnsafePathException>(() => cache.PullAsync("acme/tiny"));

        Assert.Contains("'../../../evil.txt'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'..' segment", ex.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(hub.Temp.Path, "evil.txt", SearchOption.AllDirectories));
        Assert.False(Directory.Exists(Path.Combine(hub.RepoCacheDir(), "blobs")));
    }

    [Theory]
    [InlineData("../x", "'..' segment")]
    [InlineData("a/../../x", "'..' segment")]
    [InlineData("/etc/passwd", "absolute")]
    [InlineData("a\\..\\x", "backslash")]
    [InlineData("C:/x", "absolute")]
    [InlineData("a//b", "empty segment")]
    [InlineData("./a", "'.' segment")]
    public void Unsafe_paths_are_named(string path, string reason)
    {
        Assert.Contains(reason, HubPaths.WhyUnsafe(path), StringComparison.Ordinal);
        Assert.Throws<HubUnsafePathException>(() => HubPaths.EnsureSafe("a/b", "main", path));
    }

    [Fact]
    public void Safe_paths_pass()
    {
        Assert.Null(HubPaths.WhyUnsafe("a/b/c.safetensors"));
        Assert.Null(HubPaths.WhyUnsafe(".gitattributes"));
        Assert.Null(HubPaths.WhyUnsafe("a..b"));
    }

    [Fact]
    public async Task Disk_full_surfaces_as_a_clear_error()
    {
        if (!File.Exists("/dev/full"))
        {
            return;
        }

        await using var hub = await HubHarness.StartAsync(root => Repos.WriteFile(Path.Combine(root, "acme", "full"), "w.safetensors", Repos.RandomBytes(200_000, 3)));
        var (client, cache) = hub.Create();
        var etag = (await client.ListTreeAsync("acme/full", "main")).Single().Etag!;
        var blobs = Directory.CreateDirectory(Path.Combine(hub.RepoCacheDir("acme/full"), "blobs")).FullName;
        File.CreateSymbolicLink(Path.Combine(blobs, etag + ".incomplete"), "/dev/full");

        var ex = await Assert.ThrowsAsync<HubDiskFullException>(() => cache.PullAsync("acme/full"));

        Assert.Contains("No space left", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'w.safetensors'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(blobs, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Disk_full_detection_reads_errno_and_windows_codes()
    {
        Assert.True(BlobDownloader.IsDiskFull(new IOException("x", 28)));
        Assert.True(BlobDownloader.IsDiskFull(new IOException("x", unchecked((int)0x80070070))));
        Assert.False(BlobDownloader.IsDiskFull(new IOException("x", 13)));
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
