namespace SensMerging.Hub.Client;

/// <summary>
/// Where the Hub is, where the shared cache lives and how to talk to it. Build from the environment with
/// <see cref="FromEnvironment"/> or set every property explicitly (tests do). <see cref="ToString"/> never shows the token.
/// </summary>
public sealed class HubOptions
{
    /// <summary>The official Hub.</summary>
    public const string DefaultEndpoint = "https://huggingface.co";

    private string _endpoint = DefaultEndpoint;

    /// <summary>Base URL of the Hub (HF_ENDPOINT); a trailing '/' is trimmed.</summary>
    public string Endpoint
    {
        get => _endpoint;
        set
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(value);
            var trimmed = value.Trim().TrimEnd('/');
            if (!Uri.TryCreate(trimmed, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            {
                throw new ArgumentException($"Hub endpoint '{value}' is not an absolute http(s) URL.", nameof(value));
            }

            _endpoint = trimmed;
        }
    }

    /// <summary>The cache root (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, $HF_HOME/hub).</summary>
    public string CacheDirectory { get; set; } = Path.Combine(DefaultHfHome(static _ => null), "hub");

    /// <summary>The access token, sent as "authorization: Bearer ..."; never logged.</summary>
    public string? Token { get; set; }

    /// <summary>No network at all: resolve only from refs/ and snapshots/ (HF_HUB_OFFLINE=1).</summary>
    public bool Offline { get; set; }

    /// <summary>How many files download at once.</summary>
    public int MaxParallelDownloads { get; set; } = 4;

    /// <summary>
    /// Size of each pooled chunk a download streams through (three per download: one being received while the previous
    /// one is hashed and written).
    /// </summary>
    public int DownloadBufferSize { get; set; } = 2 * 1024 * 1024;

    /// <summary>How long to wait for another process holding a blob's lock file.</summary>
    public TimeSpan LockTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Retries after a transient failure (connection error, 5xx, 408, 429); never after other 4xx.</summary>
    public int MaxRetryAttempts { get; set; } = 3;

    /// <summary>Delay before the first retry; doubles each time, with jitter.</summary>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Time allowed to receive response headers for one attempt (body streaming is not limited).</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Check blobs already in the cache against their etag before using them; a blob that fails is fetched again. A blob
    /// is hashed once and then trusted while its size and modification time match the stamp recorded when it was
    /// verified (any write to it changes its mtime), so an unchanged cache costs no re-read. False: size check only,
    /// as the official clients do.
    /// </summary>
    public bool VerifyExistingBlobs { get; set; } = true;

    /// <summary>User-Agent sent with each request.</summary>
    public string UserAgent { get; set; } = "sensmerging-hub/0.1";

    /// <summary>Reads the environment variables the official clients read.</summary>
    public static HubOptions FromEnvironment() => FromEnvironment(Environment.GetEnvironmentVariable);

    /// <summary>Reads the settings from a lookup (a dictionary in tests, the process environment otherwise).</summary>
    public static HubOptions FromEnvironment(Func<string, string?> getVariable)
    {
        ArgumentNullException.ThrowIfNull(getVariable);
        string? Get(string name) => getVariable(name) is { Length: > 0 } v ? v : null;

        var hfHome = Get("HF_HOME") ?? DefaultHfHome(getVariable);
        var options = new HubOptions
        {
            CacheDirectory = Get("HF_HUB_CACHE") ?? Get("HUGGINGFACE_HUB_CACHE") ?? Path.Combine(hfHome, "hub"),
            Offline = IsTrue(Get("HF_HUB_OFFLINE")),
        };
        if (Get("HF_ENDPOINT") is { } endpoint)
        {
            options.Endpoint = endpoint;
        }

        options.Token = Get("HF_TOKEN") ?? Get("HUGGING_FACE_HUB_TOKEN") ?? ReadTokenFile(Get("HF_TOKEN_PATH") ?? Path.Combine(hfHome, "token"));
        return options;
    }

    /// <summary>A copy with the same settings.</summary>
    public HubOptions Clone() => (HubOptions)MemberwiseClone();

    /// <inheritdoc />
    public override string ToString() =>
        $"Endpoint={Endpoint}, CacheDirectory={CacheDirectory}, Offline={Offline}, Token={(Token is null ? "none" : "set")}";

    private static bool IsTrue(string? value) =>
        value is not null && (value == "1" || value.Equals("true", StringComparison.OrdinalIgnoreCase)
            || value.Equals("yes", StringComparison.OrdinalIgnoreCase) || value.Equals("on", StringComparison.OrdinalIgnoreCase));

    private static string DefaultHfHome(Func<string, string?> getVariable)
    {
        var xdg = getVariable("XDG_CACHE_HOME");
        var baseDir = string.IsNullOrEmpty(xdg)
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache")
            : xdg;
        return Path.Combine(baseDir, "huggingface");
    }

    private static string? ReadTokenFile(string path)
    {
        try
        {
            if (!File.Exists(path))
            {
                return null;
            }

            var token = File.ReadAllText(path).Trim();
            return token.Length == 0 ? null : token;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
