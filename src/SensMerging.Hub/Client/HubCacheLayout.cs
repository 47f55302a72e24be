using Microsoft.Extensions.Logging;

namespace SensMerging.Hub.Client;

/// <summary>
/// Where things live in the cache shared with the official clients, and the small writes that keep it in their layout:
/// {root}/models--org--name/{blobs,snapshots,refs,.no_exist} and {root}/.locks/models--org--name. Every path the
/// cache, the blob downloader and the listing use comes from here.
/// </summary>
internal sealed partial class HubCacheLayout(string root, ILogger logger)
{
    private readonly ILogger _logger = logger;

    /// <summary>The cache root.</summary>
    public string Root { get; } = root;

    /// <summary>{root}/models--org--name.</summary>
    public string RepoDirectory(HubRepoId repo) => Path.Combine(Root, repo.CacheFolderName);

    /// <summary>{root}/models--org--name/blobs.</summary>
    public string BlobsDirectory(HubRepoId repo) => Path.Combine(RepoDirectory(repo), "blobs");

    /// <summary>The blob named by <paramref name="etag"/>.</summary>
    public string BlobPath(HubRepoId repo, string etag) => Path.Combine(BlobsDirectory(repo), etag);

    /// <summary>{root}/.locks/models--org--name: lock files and blob verification stamps.</summary>
    public string LocksDirectory(HubRepoId repo) => Path.Combine(Root, ".locks", repo.CacheFolderName);

    /// <summary>{root}/models--org--name/snapshots/{commit}.</summary>
    public string SnapshotDirectory(HubRepoId repo, string commit) =>
        Path.Combine(RepoDirectory(repo), "snapshots", commit);

    /// <summary>Refuses an etag that could not safely name a blob file.</summary>
    public static void EnsureSafeEtag(HubRepoId repo, string commit, string path, string etag)
    {
        if (etag.Length is 0 or > 128 || !etag.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
        {
            throw new HubUnsafePathException(repo.Id, commit, etag, $"the etag of '{path}' is not a plain hash and cannot name a blob");
        }
    }

    /// <summary>The file a snapshot entry points at (its link resolved), or null when it does not exist.</summary>
    public static string? ResolveLinkTarget(string file)
    {
        var info = new FileInfo(file);
        if (info.LinkTarget is { } target)
        {
            return Path.GetFullPath(Path.Combine(Path.GetDirectoryName(file)!, target));
        }

        return info.Exists ? file : null;
    }

    /// <summary>The commit a refs/ file names, or null when it does not hold one.</summary>
    public static string? ReadRefFile(string path)
    {
        var text = File.ReadAllText(path).Trim();
        return HubHashing.IsSha1Hex(text) ? text.ToLowerInvariant() : null;
    }

    /// <summary>Points refs/{revision} at <paramref name="commit"/> (written to a temporary file and moved into place).</summary>
    public void WriteRef(HubRepoId repo, string revision, string commit)
    {
        var refsDir = Path.Combine(RepoDirectory(repo), "refs");
        var refFile = HubPaths.Combine(refsDir, repo.Id, revision, revision);
        if (File.Exists(refFile) && File.ReadAllText(refFile) == commit)
        {
            return;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(refFile)!);
        var temp = refFile + "." + Guid.NewGuid().ToString("N") + ".tmp";
        File.WriteAllText(temp, commit);
        File.Move(temp, refFile, overwrite: true);
    }

    /// <summary>Records that <paramref name="path"/> does not exist at <paramref name="commit"/> (.no_exist, as the official clients do).</summary>
    public void WriteNoExistMarker(HubRepoId repo, string commit, string path)
    {
        var marker = HubPaths.Combine(Path.Combine(RepoDirectory(repo), ".no_exist", commit), repo.Id, commit, path);
        Directory.CreateDirectory(Path.GetDirectoryName(marker)!);
        if (!File.Exists(marker))
        {
            File.WriteAllBytes(marker, []);
        }
    }

    /// <summary>Links snapshots/{commit}/{path} to its blob (a relative symlink; a copy where links are not possible).</summary>
    public string LinkSnapshotFile(HubRepoId repo, string commit, string path, string etag)
    {
        var snapshotDir = SnapshotDirectory(repo, commit);
        var link = HubPaths.Combine(snapshotDir, repo.Id, commit, path);
        int depth = path.Count(c => c == '/');
        var target = string.Concat(Enumerable.Repeat("../", depth + 2)) + "blobs/" + etag;
        Directory.CreateDirectory(Path.GetDirectoryName(link)!);
        var existing = new FileInfo(link);
        if (existing.LinkTarget == target)
        {
            return link;
        }

        if (existing.LinkTarget is not null || existing.Exists)
        {
            File.Delete(link);
        }

        try
        {
            File.CreateSymbolicLink(link, target);
        }
        catch (IOException) when (new FileInfo(link).LinkTarget == target)
        {
            // Another pull linked the same file at the same moment.
        }
        catch (Exception ex) when (ex is UnauthorizedAccessException or PlatformNotSupportedException or IOException)
        {
            LogSymlinkFallback(_logger, link, ex.Message);
            File.Copy(BlobPath(repo, etag), link, overwrite: true);
        }

        return link;
    }

    [LoggerMessage(EventId = 5208, Level = LogLevel.Warning, Message = "Could not create symlink {Link} ({Error}); copying the blob instead")]
    private static partial void LogSymlinkFallback(ILogger logger, string link, string error);
}
