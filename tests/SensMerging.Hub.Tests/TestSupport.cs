using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Hub.Client;
using SensMerging.Hub.Server;

namespace SensMerging.Hub.Tests;

internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "hubtest-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Sub(string name)
    {
        var p = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(p);
        return p;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

internal static class Repos
{
    public static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    public static void WriteFile(string repoDir, string relPath, byte[] content)
    {
        var full = Path.Combine(repoDir, relPath.Replace('/', Path.DirectorySeparatorChar));
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllBytes(full, content);
    }

    /// <summary>acme/tiny: small files (git sha1 etags), nested paths and LFS-classified weights (sha256 etags).</summary>
    public static Dictionary<string, byte[]> CreateTiny(string root, string repoId = "acme/tiny")
    {
        var files = new Dictionary<string, byte[]>(StringComparer.Ordinal)
        {
            ["config.json"] = Encoding.UTF8.GetBytes("{\"hidden_size\": 64}\n"),
            ["README.md"] = Encoding.UTF8.GetBytes("# tiny\n"),
            ["nested/dir/data.txt"] = Encoding.UTF8.GetBytes("nested data\n"),
            ["tokenizer/vocab.txt"] = Encoding.UTF8.GetBytes("a\nb\nc\n"),
            ["model.safetensors"] = RandomBytes(300_000, 1),
            ["weights/part.bin"] = RandomBytes(120_000, 2),
        };
        var dir = Path.Combine(root, repoId.Replace('/', Path.DirectorySeparatorChar));
        foreach (var (path, content) in files)
        {
            WriteFile(dir, path, content);
        }

        return files;
    }

    /// <summary>The etag the Hub gives a file, computed independently of the library.</summary>
    public static string ExpectedEtag(string path, byte[] content)
    {
        bool lfs = path.EndsWith(".safetensors", StringComparison.Ordinal) || path.EndsWith(".bin", StringComparison.Ordinal)
            || content.Length >= 10 * 1024 * 1024;
        if (lfs)
        {
            return Convert.ToHexStringLower(SHA256.HashData(content));
        }

        var header = Encoding.ASCII.GetBytes($"blob {content.Length}\0");
        return Convert.ToHexStringLower(SHA1.HashData([.. header, .. content]));
    }
}

internal sealed class ListLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<string> Lines { get; } = new();

    public ILogger CreateLogger(string categoryName) => new ListLogger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class ListLogger(ListLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull
        {
            owner.Lines.Enqueue($"{category} scope: {state}");
            return null;
        }

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var values = state is IEnumerable<KeyValuePair<string, object?>> kv ? string.Join(";", kv.Select(p => $"{p.Key}={p.Value}")) : string.Empty;
            owner.Lines.Enqueue($"{logLevel} {category}: {formatter(state, exception)} [{values}] {exception}");
        }
    }
}

/// <summary>A server over a folder of repositories plus a client with a temp cache, wired through DI.</summary>
internal sealed class HubHarness : IAsyncDisposable
{
    private readonly List<ServiceProvider> _providers = [];

    private HubHarness(TempDir temp, HubServer server)
    {
        Temp = temp;
        Server = server;
        CacheDir = Path.Combine(temp.Path, "cache");
    }

    public TempDir Temp { get; }

    public HubServer Server { get; }

    public string CacheDir { get; }

    public string ReposDir => Path.Combine(Temp.Path, "repos");

    public ListLoggerProvider Logs { get; } = new();

    public static async Task<HubHarness> StartAsync(
        Action<string>? createRepos = null, Func<IHubRepositorySource, IHubRepositorySource>? wrap = null, int treePageSize = 1000)
    {
        var temp = new TempDir();
        var repos = temp.Sub("repos");
        if (createRepos is null)
        {
            Repos.CreateTiny(repos);
        }
        else
        {
            createRepos(repos);
        }

        IHubRepositorySource source = new FolderRepositorySource(repos);
        if (wrap is not null)
        {
            source = wrap(source);
        }

        var server = await HubServer.StartAsync(source, new HubServerOptions { TreePageSize = treePageSize });
        return new HubHarness(temp, server);
    }

    public HubOptions Options(Action<HubOptions>? configure = null)
    {
        var options = new HubOptions
        {
            Endpoint = Server.Endpoint,
            CacheDirectory = CacheDir,
            MaxRetryAttempts = 1,
            RetryBaseDelay = TimeSpan.FromMilliseconds(10),
            DownloadBufferSize = 64 * 1024,
        };
        configure?.Invoke(options);
        return options;
    }

    public (HubClient Client, HubCache Cache) Create(Action<HubOptions>? configure = null) => Create(Options(configure));

    public (HubClient Client, HubCache Cache) Create(HubOptions options)
    {
        var provider = new ServiceCollection()
            .AddLogging(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(Logs))
            .AddHubClient(options)
            .BuildServiceProvider();
        _providers.Add(provider);
        return (provider.GetRequiredService<HubClient>(), provider.GetRequiredService<HubCache>());
    }

    public string RepoCacheDir(string repoId = "acme/tiny") => Path.Combine(CacheDir, "models--" + repoId.Replace("/", "--", StringComparison.Ordinal));

    public async ValueTask DisposeAsync()
    {
        foreach (var p in _providers)
        {
            await p.DisposeAsync();
        }

        await Server.DisposeAsync();
        Temp.Dispose();
    }
}

/// <summary>Wraps a source and rewrites its snapshots (lying etags, hostile paths, extra revisions).</summary>
internal sealed class RewritingSource(
    IHubRepositorySource inner,
    Func<HubRepositorySnapshot, HubRepositorySnapshot>? rewrite = null,
    IReadOnlyDictionary<string, string>? aliases = null) : IHubRepositorySource
{
    public ValueTask<IReadOnlyList<string>> ListRepositoriesAsync(CancellationToken cancellationToken) => inner.ListRepositoriesAsync(cancellationToken);

    public async ValueTask<HubRevisionLookup> GetRevisionAsync(string repoId, string revision, CancellationToken cancellationToken)
    {
        var target = aliases is not null && aliases.TryGetValue(revision, out var a) ? a : revision;
        var lookup = await inner.GetRevisionAsync(repoId, target, cancellationToken);
        if (lookup.Snapshot is null || rewrite is null)
        {
            return lookup;
        }

        return HubRevisionLookup.Found(rewrite(lookup.Snapshot));
    }
}

/// <summary>One request as <see cref="RawHttpServer"/> read it (headers by lower-case name).</summary>
internal sealed record RawRequest(string Method, string Target, IReadOnlyDictionary<string, string> Headers)
{
    /// <summary>N of "Range: bytes=N-", or 0 without a range.</summary>
    public long RangeStart => Headers.TryGetValue("range", out var r) && r.StartsWith("bytes=", StringComparison.Ordinal)
        ? long.Parse(r["bytes=".Length..r.IndexOf('-', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture)
        : 0;
}

/// <summary>
/// A hostile HTTP/1.1 server on 127.0.0.1 over raw sockets, for what Kestrel will not do on purpose: stall after the
/// headers, or end a body early with a clean FIN (every byte sent arrives). One request per connection
/// ("Connection: close"); the handler writes the whole response itself and may wait on the token, which fires on
/// dispose.
/// </summary>
/// <summary>A Kestrel app on a free loopback port with the routes <c>map</c> adds (a fake Hub or redirect target).</summary>
internal static class FakeServer
{
    public static async Task<WebApplication> StartAsync(Action<WebApplication> map)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        map(app);
        await app.StartAsync();
        return app;
    }
}

internal sealed class RawHttpServer : IAsyncDisposable
{
    private readonly System.Net.Sockets.TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Func<RawRequest, Stream, CancellationToken, Task> _handler;
    private readonly ConcurrentBag<Task> _connections = [];
    private readonly Task _accept;

    private RawHttpServer(Func<RawRequest, Stream, CancellationToken, Task> handler)
    {
        _handler = handler;
        _listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        _listener.Start();
        _accept = AcceptAsync();
    }

    public string Endpoint => "http://127.0.0.1:" + ((System.Net.IPEndPoint)_listener.LocalEndpoint).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);

    public static RawHttpServer Start(Func<RawRequest, Stream, CancellationToken, Task> handler) => new(handler);

    /// <summary>Writes a status line and headers (plus Connection: close).</summary>
    public static Task WriteHeadAsync(Stream stream, int status, IEnumerable<(string Name, string Value)> headers, CancellationToken cancellationToken)
    {
        var text = new StringBuilder();
        text.Append(System.Globalization.CultureInfo.InvariantCulture, $"HTTP/1.1 {status} {(status is 200 or 206 ? "OK" : "X")}\r\n");
        foreach (var (name, value) in headers)
        {
            text.Append(System.Globalization.CultureInfo.InvariantCulture, $"{name}: {value}\r\n");
        }

        text.Append("Connection: close\r\n\r\n");
        return stream.WriteAsync(Encoding.ASCII.GetBytes(text.ToString()), cancellationToken).AsTask();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try
        {
            await _accept;
        }
        catch (Exception ex) when (ex is OperationCanceledException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
        }

        await Task.WhenAll(_connections);
        _stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            var client = await _listener.AcceptTcpClientAsync(_stop.Token);
            _connections.Add(ServeAsync(client));
        }
    }

    private async Task ServeAsync(System.Net.Sockets.TcpClient client)
    {
        using (client)
        {
            try
            {
                var stream = client.GetStream();
                var head = new List<byte>();
                var one = new byte[1];
                while (head.Count < 4 || head[^4] != '\r' || head[^3] != '\n' || head[^2] != '\r' || head[^1] != '\n')
                {
                    if (await stream.ReadAsync(one, _stop.Token) == 0)
                    {
                        return;
                    }

                    head.Add(one[0]);
                }

                var lines = Encoding.ASCII.GetString([.. head]).Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
                var first = lines[0].Split(' ');
                var headers = lines.Skip(1).Select(l => l.Split(':', 2))
                    .GroupBy(p => p[0].Trim().ToLowerInvariant())
                    .ToDictionary(g => g.Key, g => g.First()[1].Trim(), StringComparer.Ordinal);
                await _handler(new RawRequest(first[0], first[1], headers), stream, _stop.Token);
                await stream.FlushAsync(_stop.Token);

                // A clean end: FIN after everything written, so the client reads every byte before it sees the end.
                client.Client.Shutdown(System.Net.Sockets.SocketShutdown.Send);
                await Task.Delay(50, CancellationToken.None);
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
            {
                // The test ended, or the client went away.
            }
        }
    }
}
