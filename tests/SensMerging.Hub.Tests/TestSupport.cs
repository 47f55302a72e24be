using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
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
