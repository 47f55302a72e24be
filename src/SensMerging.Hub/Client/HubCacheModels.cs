namespace SensMerging.Hub.Client;

/// <summary>One file of a pulled snapshot.</summary>
/// <param name="Path">Path inside the repository ('/' separators).</param>
/// <param name="Size">Size in bytes.</param>
/// <param name="Etag">The blob name: sha256 (LFS) or git blob sha1.</param>
/// <param name="Sha256">sha256 of the content, when known.</param>
/// <param name="LocalPath">The file in the snapshot folder (a symlink to the blob).</param>
public sealed record PulledFile(string Path, long Size, string Etag, string? Sha256, string LocalPath);

/// <summary>A revision of a repository, present in the local cache and pinned to its commit.</summary>
/// <param name="RepoId">"org/name".</param>
/// <param name="Revision">The revision that was asked for (branch, tag or commit).</param>
/// <param name="Commit">The 40-hex commit it resolved to.</param>
/// <param name="SnapshotDirectory">{cache}/models--org--name/snapshots/{commit}.</param>
/// <param name="Files">The files selected by the include/exclude patterns.</param>
/// <param name="BytesDownloaded">Bytes received from the network during this call.</param>
/// <param name="FilesDownloaded">Blobs fetched (fully or partly) during this call.</param>
/// <param name="ResolvedOffline">True when no request was made (offline mode, or a pinned commit already cached).</param>
public sealed record PulledSnapshot(
    string RepoId, string Revision, string Commit, string SnapshotDirectory, IReadOnlyList<PulledFile> Files,
    long BytesDownloaded, int FilesDownloaded, bool ResolvedOffline)
{
    /// <summary>Sum of the file sizes.</summary>
    public long TotalSize => Files.Sum(f => f.Size);
}

/// <summary>State of one file during a pull.</summary>
public enum HubPullFileState
{
    /// <summary>The download of the file started (or resumed).</summary>
    Started,

    /// <summary>More bytes arrived.</summary>
    Downloading,

    /// <summary>The file was downloaded and verified.</summary>
    Completed,

    /// <summary>The file was already in the cache.</summary>
    Cached,
}

/// <summary>Progress of a pull, per file and overall.</summary>
public sealed record HubPullProgress(
    string Path, HubPullFileState State, long FileBytes, long FileTotal, long OverallBytes, long OverallTotal);

/// <summary>A revision found in the cache.</summary>
public sealed record CachedRevision(string Commit, IReadOnlyList<string> Refs, int FileCount, long Size, string SnapshotDirectory);

/// <summary>A repository found in the cache.</summary>
public sealed record CachedRepo(string RepoId, string RepoType, string Directory, long SizeOnDisk, DateTime LastModifiedUtc, IReadOnlyList<CachedRevision> Revisions);
