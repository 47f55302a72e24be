using System.Globalization;

namespace SensMerging.Hub;

/// <summary>Base of every error the Hub client and cache raise. Messages never contain the token.</summary>
public class HubException : Exception
{
    /// <summary>Creates an error.</summary>
    public HubException(string message, string? repoId = null, string? revision = null, string? filePath = null, Exception? innerException = null)
        : base(message, innerException)
    {
        RepoId = repoId;
        Revision = revision;
        FilePath = filePath;
    }

    /// <summary>Creates an error with a message only.</summary>
    public HubException()
    {
    }

    /// <summary>Creates an error with a message only.</summary>
    public HubException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an error with a message and a cause.</summary>
    public HubException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The repository concerned, when known.</summary>
    public string? RepoId { get; }

    /// <summary>The revision concerned, when known.</summary>
    public string? Revision { get; }

    /// <summary>The file inside the repository concerned, when known.</summary>
    public string? FilePath { get; }

    /// <summary>The HTTP status the server answered with, when the error came from a response.</summary>
    public int? StatusCode { get; internal set; }
}

/// <summary>The repository does not exist (or is private and no valid token was sent).</summary>
public sealed class HubRepositoryNotFoundException(string repoId, string? serverMessage = null)
    : HubException(
        $"Repository '{repoId}' was not found on the Hub (it does not exist, or it is private and needs a token)."
        + (string.IsNullOrEmpty(serverMessage) ? string.Empty : $" Server said: {serverMessage}"),
        repoId);

/// <summary>The revision (branch, tag or commit) does not exist in the repository.</summary>
public sealed class HubRevisionNotFoundException(string repoId, string revision, string? serverMessage = null)
    : HubException(
        $"Revision '{revision}' was not found in repository '{repoId}'."
        + (string.IsNullOrEmpty(serverMessage) ? string.Empty : $" Server said: {serverMessage}"),
        repoId, revision);

/// <summary>The file does not exist at that revision of the repository.</summary>
public sealed class HubEntryNotFoundException(string repoId, string revision, string filePath, string? serverMessage = null)
    : HubException(
        $"File '{filePath}' does not exist in repository '{repoId}' at revision '{revision}'."
        + (string.IsNullOrEmpty(serverMessage) ? string.Empty : $" Server said: {serverMessage}"),
        repoId, revision, filePath)
{
    /// <summary>The commit the server resolved the revision to (X-Repo-Commit), when it said.</summary>
    public string? Commit { get; internal set; }
}

/// <summary>The repository is gated and the caller has not been granted access.</summary>
public sealed class HubGatedRepoException(string repoId, string? revision, string? filePath, string? serverMessage = null)
    : HubException(
        $"Repository '{repoId}' is gated: request access on the Hub and send a token of an account that was granted access."
        + (string.IsNullOrEmpty(serverMessage) ? string.Empty : $" Server said: {serverMessage}"),
        repoId, revision, filePath);

/// <summary>The server rejected the token that was sent ("Invalid credentials in Authorization header").</summary>
public sealed class HubUnauthorizedException(string repoId, string? serverMessage = null)
    : HubException(
        $"The Hub rejected the credentials sent for repository '{repoId}': the token is invalid or expired (set HF_TOKEN or the token file to a valid token)."
        + (string.IsNullOrEmpty(serverMessage) ? string.Empty : $" Server said: {serverMessage}"),
        repoId);

/// <summary>Downloaded bytes do not match the etag or the size the server announced.</summary>
public sealed class HubChecksumMismatchException(string repoId, string revision, string filePath, string expected, string actual, long expectedSize, long actualSize)
    : HubException(
        string.Create(CultureInfo.InvariantCulture,
            $"Checksum mismatch for '{filePath}' of repository '{repoId}' at revision '{revision}': expected {expected} ({expectedSize} bytes), got {actual} ({actualSize} bytes). The download was discarded."),
        repoId, revision, filePath)
{
    /// <summary>The etag (hash) the server announced.</summary>
    public string Expected { get; } = expected;

    /// <summary>The hash of the bytes received.</summary>
    public string Actual { get; } = actual;

    /// <summary>The size the server announced.</summary>
    public long ExpectedSize { get; } = expectedSize;

    /// <summary>The number of bytes received.</summary>
    public long ActualSize { get; } = actualSize;
}

/// <summary>The disk holding the cache is full.</summary>
public sealed class HubDiskFullException(string repoId, string? filePath, string directory, Exception innerException)
    : HubException(
        $"No space left on the disk holding '{directory}' while downloading '{filePath}' of repository '{repoId}'. Free some space or point HF_HUB_CACHE at a larger disk.",
        repoId, null, filePath, innerException)
{
    /// <summary>The folder that could not be written.</summary>
    public string Directory { get; } = directory;
}

/// <summary>The Hub endpoint could not be reached (connection refused, name not resolved, timeout).</summary>
public sealed class HubServerUnreachableException(string endpoint, string? repoId, Exception innerException)
    : HubException(
        $"The Hub at '{endpoint}' could not be reached{(repoId is null ? string.Empty : $" for repository '{repoId}'")}: {innerException.Message} Check HF_ENDPOINT and the network, or set HF_HUB_OFFLINE=1 to use the cache only.",
        repoId, null, null, innerException)
{
    /// <summary>The endpoint that was contacted.</summary>
    public string Endpoint { get; } = endpoint;
}

/// <summary>Offline mode and the cache does not hold what was asked for.</summary>
public sealed class HubOfflineCacheMissException(string repoId, string revision, string cacheDirectory, IReadOnlyList<string> missingFiles, string detail)
    : HubException(
        $"Offline mode: repository '{repoId}' at revision '{revision}' is not available in the cache '{cacheDirectory}': {detail}"
        + (missingFiles.Count == 0 ? string.Empty : $" Missing: {string.Join(", ", missingFiles.Take(20))}{(missingFiles.Count > 20 ? ", ..." : string.Empty)}."),
        repoId, revision)
{
    /// <summary>The cache folder that was searched.</summary>
    public string CacheDirectory { get; } = cacheDirectory;

    /// <summary>Files known to be missing (empty when the whole revision is missing).</summary>
    public IReadOnlyList<string> MissingFiles { get; } = missingFiles;
}

/// <summary>A remote file name or revision would escape its folder in the cache.</summary>
public sealed class HubUnsafePathException(string repoId, string? revision, string path, string reason)
    : HubException(
        $"Refusing unsafe path '{path}' from repository '{repoId}'{(revision is null ? string.Empty : $" at revision '{revision}'")}: {reason}.",
        repoId, revision, path);

/// <summary>
/// The Hub stopped answering: no headers, or no body bytes, within the timeout, on every attempt. The message names the
/// repository, the file (when there is one), the timeout and the setting that controls it.
/// </summary>
public sealed class HubTimeoutException(string repoId, string? revision, string? filePath, TimeSpan timeout, string setting, int attempts, string description, Exception? innerException = null)
    : HubException(
        string.Create(CultureInfo.InvariantCulture,
            $"Timed out on {(filePath is null ? string.Empty : $"'{filePath}' of ")}repository '{repoId}'{(revision is null ? string.Empty : $" at revision '{revision}'")}: {description} ({setting} = {Format(timeout)}; {attempts} attempt(s)). Raise {setting} (seconds) for a slow link."),
        repoId, revision, filePath, innerException)
{
    /// <summary>The timeout that ran out.</summary>
    public TimeSpan Timeout { get; } = timeout;

    /// <summary>The environment variable that sets it (HF_HUB_DOWNLOAD_TIMEOUT or HF_HUB_ETAG_TIMEOUT).</summary>
    public string Setting { get; } = setting;

    /// <summary>Attempts made.</summary>
    public int Attempts { get; } = attempts;

    internal static string Format(TimeSpan timeout) => timeout.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture) + " s";

    internal static string SettingOf(Client.HubRequestKind kind) =>
        kind == Client.HubRequestKind.Download ? Client.HubOptions.DownloadTimeoutVariable : Client.HubOptions.EtagTimeoutVariable;
}

/// <summary>The bytes received do not have the size the Hub announced (the content was not compared further).</summary>
public sealed class HubSizeMismatchException(string repoId, string revision, string filePath, long expectedSize, long actualSize)
    : HubException(
        string.Create(CultureInfo.InvariantCulture,
            $"Size mismatch for '{filePath}' of repository '{repoId}' at revision '{revision}': the Hub announced {expectedSize} bytes, {actualSize} were received. The download was discarded."),
        repoId, revision, filePath)
{
    /// <summary>The size the server announced.</summary>
    public long ExpectedSize { get; } = expectedSize;

    /// <summary>The number of bytes received.</summary>
    public long ActualSize { get; } = actualSize;
}

/// <summary>A redirect pointed somewhere the client does not go (a scheme other than http or https, e.g. file://).</summary>
public sealed class HubUnsafeRedirectException(string repoId, string? revision, string? filePath, string target, string reason)
    : HubException(
        $"Refusing the redirect {(filePath is null ? string.Empty : $"for '{filePath}' ")}of repository '{repoId}'{(revision is null ? string.Empty : $" at revision '{revision}'")} to '{target}': {reason}.",
        repoId, revision, filePath)
{
    /// <summary>Where the redirect pointed.</summary>
    public string Target { get; } = target;
}
