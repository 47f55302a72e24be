namespace SensMerging.Hub.Server.Store;

/// <summary>
/// Serves the pushed repositories of a <see cref="HubRepositoryStore"/> through the Hub read API: any branch, <c>HEAD</c>
/// or any past commit by its id, each file read from its blob. Private repositories are read with any valid token.
/// </summary>
public sealed class StoreRepositorySource : IHubRepositorySource
{
    private readonly HubRepositoryStore _store;
    private readonly Func<string, bool>? _acceptsToken;

    /// <param name="store">The store.</param>
    /// <param name="acceptsToken">Whether a bearer token may read private repositories (null: nobody may).</param>
    public StoreRepositorySource(HubRepositoryStore store, Func<string, bool>? acceptsToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _acceptsToken = acceptsToken;
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<string>> ListRepositoriesAsync(CancellationToken cancellationToken) =>
        ValueTask.FromResult(_store.ListRepositories());

    /// <inheritdoc />
    public async ValueTask<HubRevisionLookup> GetRevisionAsync(string repoId, string revision, CancellationToken cancellationToken)
    {
        if (!HubRepoId.TryParse(repoId, out var id) || id!.Org is null || await _store.GetRepositoryAsync(repoId, cancellationToken) is not { } info)
        {
            return HubRevisionLookup.RepositoryNotFound;
        }

        var commit = await _store.ResolveAsync(repoId, revision, cancellationToken);
        if (commit is null)
        {
            return HubRevisionLookup.RevisionNotFound;
        }

        var files = commit.Files.Select(f => new HubRepositoryFile(f.Path, f.Size, f.GitOid, f.Sha256, f.Lfs, _store.BlobPath(f.Sha256))).ToList();
        var access = info.Private
            ? HubRepositoryAccess.Public with { Private = true, AcceptsToken = _acceptsToken }
            : HubRepositoryAccess.Public;
        return HubRevisionLookup.Found(new HubRepositorySnapshot(repoId, commit.Id, commit.Date, files, access));
    }
}
