using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Hub.Client;

namespace SensMerging.Hub.Tests;

/// <summary>
/// Hostile servers on 127.0.0.1 against <c>hub pull</c>: stalls (HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT), a body
/// cut mid-way, a Link: next cycle, a non-hash ETag, a size that does not match, a redirect to file://. The timeout a
/// test expects to run out is set to 1 s through the environment variables the official clients read.
/// </summary>
public sealed class HubPullReliabilityTests
{
    private const string Commit = "0123456789abcdef0123456789abcdef01234567";

    /// <summary>Bound for a call that, before the fix, would hang: the test fails instead of hanging.</summary>
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_download_that_stalls_after_the_headers_fails_within_the_timeout_and_keeps_what_arrived()
    {
        var content = Repos.RandomBytes(100_000, 21);
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(content));
        var ranges = new ConcurrentQueue<long>();
        await using var server = RawHttpServer.Start(async (request, stream, ct) =>
        {
            var headers = new List<(string, string)> { ("X-Repo-Commit", Commit), ("ETag", $"\"{sha256}\""), ("Accept-Ranges", "bytes") };
            if (request.Method == "HEAD")
            {
                headers.Add(("Content-Length", content.Length.ToString(CultureInfo.InvariantCulture)));
                await RawHttpServer.WriteHeadAsync(stream, 200, headers, ct);
                return;
            }

            long from = request.RangeStart;
            ranges.Enqueue(from);
            headers.Add(("Content-Length", (content.Length - from).ToString(CultureInfo.InvariantCulture)));
            if (from > 0)
            {
                headers.Add(("Content-Range", $"bytes {from}-{content.Length - 1}/{content.Length}"));
            }

            await RawHttpServer.WriteHeadAsync(stream, from > 0 ? 206 : 200, headers, ct);
            await stream.WriteAsync(content.AsMemory((int)from, 1000), ct);
            await stream.FlushAsync(ct);
            await Task.Delay(Timeout.Infinite, ct); // stalls until the test ends
        });
        using var temp = new TempDir();
        using var provider = Provider(server.Endpoint, temp.Path, retries: 2, downloadTimeout: "1");
        var cache = provider.GetRequiredService<HubCache>();

        var clock = Stopwatch.StartNew();
        var ex = await Assert.ThrowsAnyAsync<HubException>(() => cache.DownloadFileAsync("acme/stall", "w.safetensors").WaitAsync(Hang));
        clock.Stop();

        // Three attempts of 1 s each (plus short back-off), not forever.
        Assert.InRange(clock.Elapsed.TotalSeconds, 2.5, 15);
        Assert.Contains("'acme/stall'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'w.safetensors'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("HF_HUB_DOWNLOAD_TIMEOUT", ex.Message, StringComparison.Ordinal);
        Assert.Contains("1 s", ex.Message, StringComparison.Ordinal);

        // Each retry resumed after the bytes the previous attempt received; they are kept for the next pull.
        Assert.Equal([0L, 1000L, 2000L], ranges.ToArray());
        var incomplete = Path.Combine(temp.Path, "models--acme--stall", "blobs", sha256 + ".incomplete");
        Assert.Equal(content.AsSpan(0, 3000).ToArray(), await File.ReadAllBytesAsync(incomplete));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_metadata_call_that_stalls_fails_within_the_etag_timeout(bool afterHeaders)
    {
        int calls = 0;
        await using var server = RawHttpServer.Start(async (request, stream, ct) =>
        {
            Interlocked.Increment(ref calls);
            if (afterHeaders)
            {
                await RawHttpServer.WriteHeadAsync(stream, 200, [("Content-Type", "application/json"), ("Content-Length", "1000")], ct);
                await stream.WriteAsync("{\"id\": \"acme/slow\", "u8.ToArray(), ct);
                await stream.FlushAsync(ct);
            }

            await Task.Delay(Timeout.Infinite, ct);
        });
        using var temp = new TempDir();
        using var provider = Provider(server.Endpoint, temp.Path, retries: 1, etagTimeout: "1");
        var cache = provider.GetRequiredService<HubCache>();

        var clock = Stopwatch.StartNew();
        var ex = await Assert.ThrowsAnyAsync<HubException>(() => cache.PullAsync("acme/slow").WaitAsync(Hang));

        Assert.InRange(clock.Elapsed.TotalSeconds, 1.5, 12);
        Assert.Equal(2, calls); // one retry after the first stall
        Assert.Contains("'acme/slow'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("HF_HUB_ETAG_TIMEOUT", ex.Message, StringComparison.Ordinal);
        Assert.Contains("1 s", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_body_cut_mid_way_resumes_from_every_byte_received()
    {
        var content = Repos.RandomBytes(1_000_000, 22);
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(content));
        const int cutAt = 400_000;
        var ranges = new ConcurrentQueue<string>();
        var served = new ConcurrentQueue<long>();
        await using var server = RawHttpServer.Start(async (request, stream, ct) =>
        {
            var headers = new List<(string, string)> { ("X-Repo-Commit", Commit), ("ETag", $"\"{sha256}\""), ("Accept-Ranges", "bytes") };
            if (request.Method == "HEAD")
            {
                headers.Add(("Content-Length", content.Length.ToString(CultureInfo.InvariantCulture)));
                await RawHttpServer.WriteHeadAsync(stream, 200, headers, ct);
                return;
            }

            ranges.Enqueue(request.Headers.GetValueOrDefault("range", string.Empty));
            long from = request.RangeStart;
            headers.Add(("Content-Length", (content.Length - from).ToString(CultureInfo.InvariantCulture)));
            if (from > 0)
            {
                headers.Add(("Content-Range", $"bytes {from}-{content.Length - 1}/{content.Length}"));
            }

            await RawHttpServer.WriteHeadAsync(stream, from > 0 ? 206 : 200, headers, ct);
            int end = ranges.Count == 1 ? cutAt : content.Length; // the first body ends early (a clean FIN)
            await stream.WriteAsync(content.AsMemory((int)from, end - (int)from), ct);
            served.Enqueue(end - from);
        });
        using var temp = new TempDir();
        using var provider = Provider(server.Endpoint, temp.Path, retries: 2, configure: o => o.DownloadBufferSize = 2 * 1024 * 1024);
        var cache = provider.GetRequiredService<HubCache>();

        var file = await cache.DownloadFileAsync("acme/cut", "w.safetensors").WaitAsync(Hang);

        Assert.Equal(content, await File.ReadAllBytesAsync(file.LocalPath));
        Assert.Equal([string.Empty, $"bytes={cutAt}-"], ranges.ToArray());
        Assert.Equal([(long)cutAt, content.Length - cutAt], served.ToArray()); // not one byte sent twice
    }

    [Fact]
    public async Task A_Link_next_cycle_in_the_tree_listing_is_an_error_that_names_it()
    {
        int pages = 0;
        await using var hub = await FakeServer.StartAsync(app =>
        {
            app.MapGet("/api/models/acme/cycle/revision/main", () => Results.Json(new Dictionary<string, object> { ["id"] = "acme/cycle", ["sha"] = Commit }));
            app.MapGet($"/api/models/acme/cycle/tree/{Commit}", (HttpContext c) =>
            {
                Interlocked.Increment(ref pages);
                var page = c.Request.Query["cursor"].ToString() is { Length: > 0 } cursor ? cursor : "a";
                var next = page == "a" ? "b" : "a";
                c.Response.Headers.Link = $"<{c.Request.Scheme}://{c.Request.Host}/api/models/acme/cycle/tree/{Commit}?cursor={next}>; rel=\"next\"";
                return Results.Json(new[] { new Dictionary<string, object> { ["type"] = "file", ["path"] = $"f-{page}.txt", ["size"] = 1, ["oid"] = Commit } });
            });
        });
        using var temp = new TempDir();
        using var provider = Provider(hub.Urls.First(), temp.Path, retries: 0);
        var cache = provider.GetRequiredService<HubCache>();

        var ex = await Assert.ThrowsAnyAsync<HubException>(() => cache.PullAsync("acme/cycle").WaitAsync(Hang));

        Assert.Contains("'acme/cycle'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("cycle", ex.Message, StringComparison.Ordinal);
        Assert.Contains("cursor=a", ex.Message, StringComparison.Ordinal);
        Assert.InRange(pages, 2, 3);
    }

    [Fact]
    public async Task A_non_hash_etag_is_checked_for_size_only_and_never_stamped_verified()
    {
        var content = Repos.RandomBytes(5000, 23);
        const string md5Like = "5d41402abc4b2a76b9719d911017c592";
        await using var hub = await FakeServer.StartAsync(app => app.MapMethods("/acme/weak/resolve/{rev}/w.bin", ["GET", "HEAD"], (HttpContext c) =>
        {
            c.Response.Headers["X-Repo-Commit"] = Commit;
            c.Response.Headers.ETag = $"W/\"{md5Like}\"";
            return Results.Bytes(content, "application/octet-stream", enableRangeProcessing: true);
        }));
        using var temp = new TempDir();
        var logs = new ListLoggerProvider();
        using var provider = Provider(hub.Urls.First(), temp.Path, retries: 0, logs: logs);
        var cache = provider.GetRequiredService<HubCache>();
        var locks = Path.Combine(temp.Path, ".locks", "models--acme--weak");

        var file = await cache.DownloadFileAsync("acme/weak", "w.bin");
        var again = await cache.DownloadFileAsync("acme/weak", "w.bin");

        Assert.Equal(content, await File.ReadAllBytesAsync(file.LocalPath));
        Assert.Equal(md5Like, again.Etag);
        Assert.Empty(Directory.GetFiles(locks, "*.verified"));
        Assert.Contains(logs.Lines, l => l.Contains("neither sha256 nor sha1", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_size_mismatch_is_reported_as_a_size_mismatch()
    {
        await using var hub = await HubHarness.StartAsync(wrap: inner => new RewritingSource(inner, s => s with
        {
            Files = [.. s.Files.Select(f => f.Path == "model.safetensors" ? f with { Size = f.Size + 100 } : f)],
        }));
        var (_, cache) = hub.Create();

        var ex = await Assert.ThrowsAnyAsync<HubException>(() => cache.PullAsync("acme/tiny", include: ["model.safetensors"]));

        Assert.Equal("HubSizeMismatchException", ex.GetType().Name);
        Assert.StartsWith("Size mismatch for 'model.safetensors'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("300100", ex.Message, StringComparison.Ordinal);
        Assert.Contains("300000", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("hecksum", ex.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(Path.Combine(hub.RepoCacheDir(), "blobs")));
    }

    [Theory]
    [InlineData("file:///etc/passwd")]
    [InlineData("ftp://127.0.0.1/w.safetensors")]
    public async Task A_redirect_to_a_non_http_scheme_is_refused_naming_the_file_and_the_target(string target)
    {
        var content = Repos.RandomBytes(1000, 24);
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(content));
        await using var hub = await FakeServer.StartAsync(app => app.MapMethods("/acme/redirect/resolve/{rev}/w.safetensors", ["GET", "HEAD"], (HttpContext c) =>
        {
            c.Response.Headers["X-Repo-Commit"] = Commit;
            c.Response.Headers.ETag = $"\"{sha256}\"";
            if (HttpMethods.IsHead(c.Request.Method))
            {
                c.Response.ContentLength = content.Length;
                return Results.Empty;
            }

            c.Response.Headers.Location = target;
            return Results.StatusCode(302);
        }));
        using var temp = new TempDir();
        using var provider = Provider(hub.Urls.First(), temp.Path, retries: 0);
        var cache = provider.GetRequiredService<HubCache>();

        var ex = await Assert.ThrowsAnyAsync<HubException>(() => cache.DownloadFileAsync("acme/redirect", "w.safetensors"));

        Assert.Contains("'w.safetensors'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'acme/redirect'", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"'{target}'", ex.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(temp.Path, "models--acme--redirect", "blobs", sha256)));
    }

    /// <summary>
    /// Options as the environment gives them (HF_HUB_DOWNLOAD_TIMEOUT, HF_HUB_ETAG_TIMEOUT). Only the timeout a test
    /// expects to run out is small: a first request to a fresh server on a busy machine can take more than 1 s.
    /// </summary>
    private static ServiceProvider Provider(
        string endpoint, string cacheDir, int retries, string downloadTimeout = "10", string etagTimeout = "10",
        Action<HubOptions>? configure = null, ListLoggerProvider? logs = null)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["HF_ENDPOINT"] = endpoint,
            ["HF_HOME"] = Path.Combine(cacheDir, "home"),
            ["HF_HUB_CACHE"] = cacheDir,
            ["HF_HUB_DOWNLOAD_TIMEOUT"] = downloadTimeout,
            ["HF_HUB_ETAG_TIMEOUT"] = etagTimeout,
        };
        var options = HubOptions.FromEnvironment(n => env.GetValueOrDefault(n));
        options.MaxRetryAttempts = retries;
        options.RetryBaseDelay = TimeSpan.FromMilliseconds(10);
        configure?.Invoke(options);
        return new ServiceCollection()
            .AddLogging(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(logs ?? new ListLoggerProvider()))
            .AddHubClient(options)
            .BuildServiceProvider();
    }
}
