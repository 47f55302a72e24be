namespace SensMerging.Hub.Server;

/// <summary>One file of a served repository.</summary>
/// <param name="Path">Path inside the repository ('/' separators).</param>
/// <param name="Size">Size in bytes.</param>
/// <param name="GitOid">Git blob sha1: of the content for small files, of the LFS pointer file for LFS files.</param>
/// <param name="Sha256">sha256 of the content (required for LFS files).</param>
/// <param name="IsLfs">True for files stored through LFS (large or binary weights).</param>
/// <param name="PhysicalPath">Where the bytes are on disk: the real path (no symlink in it), which the server checks again before it serves.</param>
public sealed record HubRepositoryFile(string Path, long Size, string GitOid, string? Sha256, bool IsLfs, string PhysicalPath)
{
    /// <summary>The etag the Hub gives this file: sha256 for LFS files, the git blob sha1 otherwise.</summary>
    public string Etag => IsLfs ? Sha256 ?? throw new InvalidOperationException($"LFS file '{Path}' has no sha256.") : GitOid;

    /// <summary>Size of the LFS pointer file (for the lfs.pointerSize field).</summary>
    public long PointerSize => IsLfs && Sha256 is not null ? HubHashing.LfsPointerText(Sha256, Size).Length : 0;
}

/// <summary>Who may read a repository.</summary>
/// <param name="Private">Private repositories need a bearer token from <paramref name="AcceptedTokens"/>.</param>
/// <param name="AcceptedTokens">Tokens that may read a private repository.</param>
/// <param name="Gated">Gated repositories list files freely but serve them only to <paramref name="GrantedTokens"/>.</param>
/// <param name="GrantedTokens">Tokens granted access to a gated repository.</param>
public sealed record HubRepositoryAccess(bool Private, IReadOnlySet<string> AcceptedTokens, bool Gated, IReadOnlySet<string> GrantedTokens)
{
    /// <summary>Further tokens accepted for a private repository (the server's token file); checked after <see cref="AcceptedTokens"/>.</summary>
    public Func<string, bool>? AcceptsToken { get; init; }

    /// <summary>True when <paramref name="token"/> may read a private repository.</summary>
    public bool Accepts(string token) => AcceptedTokens.Contains(token) || AcceptsToken?.Invoke(token) == true;

    /// <summary>Public, not gated.</summary>
    public static HubRepositoryAccess Public { get; } = new(false, new HashSet<string>(), false, new HashSet<string>());
}

/// <summary>A repository at one commit.</summary>
public sealed record HubRepositorySnapshot(
    string RepoId, string Commit, DateTimeOffset LastModified, IReadOnlyList<HubRepositoryFile> Files, HubRepositoryAccess Access);

/// <summary>Outcome of looking up a revision.</summary>
public enum HubRevisionStatus
{
    /// <summary>The revision exists; the snapshot is set.</summary>
    Found,

    /// <summary>No such repository.</summary>
    RepositoryNotFound,

    /// <summary>The repository exists but not that revision.</summary>
    RevisionNotFound,
}

/// <summary>Result of <see cref="IHubRepositorySource.GetRevisionAsync"/>.</summary>
public sealed record HubRevisionLookup(HubRevisionStatus Status, HubRepositorySnapshot? Snapshot)
{
    /// <summary>No such repository.</summary>
    public static HubRevisionLookup RepositoryNotFound { get; } = new(HubRevisionStatus.RepositoryNotFound, null);

    /// <summary>No such revision.</summary>
    public static HubRevisionLookup RevisionNotFound { get; } = new(HubRevisionStatus.RevisionNotFound, null);

    /// <summary>Found.</summary>
    public static HubRevisionLookup Found(HubRepositorySnapshot snapshot) => new(HubRevisionStatus.Found, snapshot);
}

/// <summary>
/// What the Hub server serves: a set of repositories, each resolvable at revisions ("main", "HEAD", a commit, or
/// whatever else the source knows). Implemented for a folder of repositories; the registry adds one for merged models.
/// </summary>
public interface IHubRepositorySource
{
    /// <summary>All repository ids ("org/name").</summary>
    ValueTask<IReadOnlyList<string>> ListRepositoriesAsync(CancellationToken cancellationToken);

    /// <summary>Resolves a revision of a repository to a snapshot.</summary>
    ValueTask<HubRevisionLookup> GetRevisionAsync(string repoId, string revision, CancellationToken cancellationToken);
}
