using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Hub.Client;

namespace SensMerging.Hub.Tests;

/// <summary>A fake Hub that redirects like the real one: relative 307 inside the Hub, absolute 302 to a CDN host.</summary>
public sealed class HubRedirectTests
{
    private const string Token = "hf_RedirectSecret42";

    [Fact]
    public async Task Head_follows_relative_redirects_only_and_get_downloads_from_the_cdn_without_the_token()
    {
        var content = Repos.RandomBytes(50_000, 11);
        var sha256 = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(content));
        const string commit = "0123456789abcdef0123456789abcdef01234567";
        var cdnAuth = new ConcurrentQueue<string>();

        await using var cdn = await FakeServer.StartAsync(app => app.MapGet("/blob", (HttpContext c) =>
        {
            cdnAuth.Enqueue(c.Request.Headers.Authorization.ToString());
            return Results.Bytes(content, "application/octet-stream", enableRangeProcessing: true);
        }));
        var cdnUrl = cdn.Urls.First() + "/blob";

        await using var hub = await FakeServer.StartAsync(app =>
        {
            app.MapMethods("/acme/moved/resolve/{rev}/w.safetensors", ["GET", "HEAD"], (HttpContext c) =>
            {
                c.Response.Headers.Location = "/acme/renamed/resolve/main/w.safetensors";
                return Results.StatusCode(307);
            });
            app.MapMethods("/acme/renamed/resolve/{rev}/w.safetensors", ["GET", "HEAD"], (HttpContext c) =>
            {
                c.Response.Headers["X-Repo-Commit"] = commit;
                c.Response.Headers["X-Linked-Etag"] = $"\"{sha256}\"";
                c.Response.Headers["X-Linked-Size"] = content.Length.ToString(System.Globalization.CultureInfo.InvariantCulture);
                c.Response.Headers.ETag = "W/\"pointer-etag\"";
                c.Response.Headers.Location = cdnUrl;
                return Results.StatusCode(302);
            });
        });

        using var temp = new TempDir();
        var logs = new ListLoggerProvider();
        using var provider = new ServiceCollection()
            .AddLogging(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(logs))
            .AddHubClient(new HubOptions { Endpoint = hub.Urls.First(), CacheDirectory = temp.Path, Token = Token, MaxRetryAttempts = 0 })
            .BuildServiceProvider();
        var cache = provider.GetRequiredService<HubCache>();
        var client = provider.GetRequiredService<HubClient>();

        var meta = await client.GetFileMetadataAsync("acme/moved", "main", "w.safetensors");
        Assert.Equal(commit, meta.Commit);
        Assert.Equal(sha256, meta.Etag);
        Assert.Equal(content.Length, meta.Size);
        Assert.Empty(cdnAuth); // HEAD did not follow the absolute redirect to the CDN.

        var file = await cache.DownloadFileAsync("acme/moved", "w.safetensors");
        Assert.Equal(content, await File.ReadAllBytesAsync(file.LocalPath));
        Assert.Equal(sha256, file.Sha256);
        Assert.Equal("../../blobs/" + sha256, new FileInfo(file.LocalPath).LinkTarget);
        Assert.Equal(commit, await File.ReadAllTextAsync(Path.Combine(temp.Path, "models--acme--moved", "refs", "main")));
        Assert.Equal([string.Empty], cdnAuth); // The token stays with the Hub's host.
        Assert.DoesNotContain(logs.Lines, l => l.Contains(Token, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_connection_lost_mid_download_resumes_from_the_bytes_on_disk()
    {
        var content = Repos.RandomBytes(1_000_000, 12);
        var sha256 = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(content));
        const string commit = "89abcdef0123456789abcdef0123456789abcdef";
        var ranges = new ConcurrentQueue<string>();
        int gets = 0;

        await using var hub = await FakeServer.StartAsync(app => app.MapMethods("/acme/flaky/resolve/{rev}/w.safetensors", ["GET", "HEAD"], async (HttpContext c) =>
        {
            c.Response.Headers["X-Repo-Commit"] = commit;
            c.Response.Headers.ETag = $"\"{sha256}\"";
            c.Response.Headers.AcceptRanges = "bytes";
            if (HttpMethods.IsHead(c.Request.Method))
            {
                c.Response.ContentLength = content.Length;
                return;
            }

            ranges.Enqueue(c.Request.Headers.Range.ToString());
            if (Interlocked.Increment(ref gets) == 1)
            {
                c.Response.ContentLength = content.Length;
                await c.Response.Body.WriteAsync(content.AsMemory(0, 400_000));
                await c.Response.Body.FlushAsync();
                await Task.Delay(100);
                c.Abort();
                return;
            }

            var from = int.Parse(c.Request.Headers.Range.ToString()["bytes=".Length..].TrimEnd('-'), System.Globalization.CultureInfo.InvariantCulture);
            c.Response.StatusCode = 206;
            c.Response.Headers.ContentRange = $"bytes {from}-{content.Length - 1}/{content.Length}";
            c.Response.ContentLength = content.Length - from;
            await c.Response.Body.WriteAsync(content.AsMemory(from));
        }));

        using var temp = new TempDir();
        using var provider = new ServiceCollection()
            .AddHubClient(new HubOptions { Endpoint = hub.Urls.First(), CacheDirectory = temp.Path, MaxRetryAttempts = 2, RetryBaseDelay = TimeSpan.FromMilliseconds(10), DownloadBufferSize = 64 * 1024 })
            .BuildServiceProvider();
        var cache = provider.GetRequiredService<HubCache>();

        var file = await cache.DownloadFileAsync("acme/flaky", "w.safetensors");

        Assert.Equal(content, await File.ReadAllBytesAsync(file.LocalPath));
        Assert.Equal(2, ranges.Count);
        Assert.Equal(string.Empty, ranges.First());
        var resumedFrom = long.Parse(ranges.Last()["bytes=".Length..].TrimEnd('-'), System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(resumedFrom, 1, 400_000);
    }
}
