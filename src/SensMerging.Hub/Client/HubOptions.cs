using System.Globalization;

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

    /// <summary>Default of <see cref="DownloadTimeout"/> and <see cref="EtagTimeout"/>: 10 s, as in the official clients.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Environment variable of <see cref="DownloadTimeout"/> (seconds).</summary>
    public const string DownloadTimeoutVariable = "HF_HUB_DOWNLOAD_TIMEOUT";

    /// <summary>Environment variable of <see cref="EtagTimeout"/> (seconds).</summary>
    public const string EtagTimeoutVariable = "HF_HUB_ETAG_TIMEOUT";

    /// <summary>
    /// File downloads (HF_HUB_DOWNLOAD_TIMEOUT, default 10 s): the longest wait for the response headers and then between
    /// two received pieces of the body. A stalled attempt counts as an interruption: retried with back-off from the bytes
    /// already received, up to <see cref="MaxRetryAttempts"/> times.
    /// </summary>
    public TimeSpan DownloadTimeout { get; set; } = DefaultTimeout;

    /// <summary>
    /// Metadata calls (HF_HUB_ETAG_TIMEOUT, default 10 s): model info, tree pages, paths-info and HEAD, each attempt with
    /// its whole body. A stalled attempt is retried with back-off, up to <see cref="MaxRetryAttempts"/> times.
    /// </summary>
    public TimeSpan EtagTimeout { get; set; } = DefaultTimeout;

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

        options.DownloadTimeout = ParseTimeout(DownloadTimeoutVariable, Get(DownloadTimeoutVariable)) ?? DefaultTimeout;
        options.EtagTimeout = ParseTimeout(EtagTimeoutVariable, Get(EtagTimeoutVariable)) ?? DefaultTimeout;
        options.Token = Get("HF_TOKEN") ?? Get("HUGGING_FACE_HUB_TOKEN") ?? ReadTokenFile(Get("HF_TOKEN_PATH") ?? Path.Combine(hfHome, "token"));
        return options;
    }

    /// <summary>
    /// Applies settings given by name, after the environment: <c>DownloadTimeout</c> and <c>EtagTimeout</c>, in seconds
    /// like the environment variables (or as hh:mm:ss). The host passes its configuration section "Hub" (so
    /// <c>--set Hub:DownloadTimeout=30</c> and <c>SENSMERGE_Hub__EtagTimeout=30</c> work). Unset keys change nothing.
    /// </summary>
    public void ApplySettings(Func<string, string?> getSetting)
    {
        ArgumentNullException.ThrowIfNull(getSetting);
        if (ParseTimeout("Hub:" + nameof(DownloadTimeout), getSetting(nameof(DownloadTimeout))) is { } download)
        {
            DownloadTimeout = download;
        }

        if (ParseTimeout("Hub:" + nameof(EtagTimeout), getSetting(nameof(EtagTimeout))) is { } etag)
        {
            EtagTimeout = etag;
        }
    }

    /// <summary>
    /// Seconds (e.g. "10", "2.5") or a time span ("00:00:10"); null when unset, or "0" (the default, as the official
    /// clients read it). Anything else is an error that names the setting.
    /// </summary>
    internal static TimeSpan? ParseTimeout(string name, string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            return null;
        }

        var text = value.Trim();
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && double.IsFinite(seconds) && seconds >= 0
            && seconds <= TimeSpan.MaxValue.TotalSeconds / 2)
        {
            return seconds == 0 ? null : TimeSpan.FromSeconds(seconds);
        }

        if (text.Contains(':', StringComparison.Ordinal) && TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var span) && span >= TimeSpan.Zero)
        {
            return span == TimeSpan.Zero ? null : span;
        }

        throw new ArgumentException($"{name}='{value}' is not a timeout: give seconds (e.g. 10 or 2.5) or hh:mm:ss.", nameof(value));
    }

    /// <summary>A copy with the same settings.</summary>
    public HubOptions Clone() => (HubOptions)MemberwiseClone();

    /// <inheritdoc />
    public override string ToString() =>
        $"Endpoint={Endpoint}, CacheDirectory={CacheDirectory}, Offline={Offline}, DownloadTimeout={DownloadTimeout}, EtagTimeout={EtagTimeout}, Token={(Token is null ? "none" : "set")}";

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
