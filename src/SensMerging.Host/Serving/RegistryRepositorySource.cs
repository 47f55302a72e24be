using SensMerging.Hub.Server;
using SensMerging.Registry;

namespace SensMerging.Host.Serving;

/// <summary>
/// Serves the outputs of succeeded merges in the registry as Hub repositories <c>merges/&lt;record id&gt;</c> (or the
/// repo id the record names), so standard Hub clients can pull merged models.
/// </summary>
public sealed class RegistryRepositorySource : IHubRepositorySource
{
    public const string Organization = "merges";

    private readonly IMergeRegistry _registry;
    private readonly Func<string, string, CancellationToken, Task<HubRepositorySnapshot>> _snapshotFolder;

    /// <param name="registry">The registry to read.</param>
    /// <param name="snapshotFolder">Describes a folder as a repository snapshot: <c>(repoId, folder, ct)</c>.</param>
    public RegistryRepositorySource(IMergeRegistry registry, Func<string, string, CancellationToken, Task<HubRepositorySnapshot>> snapshotFolder)
    {
        _registry = registry;
        _snapshotFolder = snapshotFolder;
    }

    /// <summary>The repository id a merge is served under.</summary>
    public static string RepoIdOf(MergeSummary merge)
    {
        ArgumentNullException.ThrowIfNull(merge);
        return merge.OutputRepoId ?? $"{Organization}/{merge.Id}";
    }

    public async ValueTask<IReadOnlyList<string>> ListRepositoriesAsync(CancellationToken cancellationToken)
    {
        var merges = await _registry.ListAsync(new MergeQuery { Status = MergeStatus.Succeeded, Limit = 0 }, cancellationToken);
        return [.. merges.Where(m => m.OutputFolder is not null && Directory.Exists(m.OutputFolder)).Select(RepoIdOf).Order(StringComparer.Ordinal)];
    }

    public async ValueTask<HubRevisionLookup> GetRevisionAsync(string repoId, string revision, CancellationToken cancellationToken)
    {
        var merges = await _registry.ListAsync(new MergeQuery { Status = MergeStatus.Succeeded, Limit = 0 }, cancellationToken);
        var merge = merges.FirstOrDefault(m => string.Equals(RepoIdOf(m), repoId, StringComparison.Ordinal));
        if (merge?.OutputFolder is null || !Directory.Exists(merge.OutputFolder))
        {
            return HubRevisionLookup.RepositoryNotFound;
        }
        var snapshot = await _snapshotFolder(repoId, merge.OutputFolder, cancellationToken);
        return revision is "main" or "HEAD" || string.Equals(revision, snapshot.Commit, StringComparison.OrdinalIgnoreCase)
            ? HubRevisionLookup.Found(snapshot)
            : HubRevisionLookup.RevisionNotFound;
    }
}

/// <summary>Several sources as one: repositories listed from all, each looked up in the first source that has it.</summary>
public sealed class CompositeRepositorySource : IHubRepositorySource
{
    private readonly IReadOnlyList<IHubRepositorySource> _sources;

    public CompositeRepositorySource(IReadOnlyList<IHubRepositorySource> sources) => _sources = sources;

    public async ValueTask<IReadOnlyList<string>> ListRepositoriesAsync(CancellationToken cancellationToken)
    {
        var all = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var source in _sources)
        {
            all.UnionWith(await source.ListRepositoriesAsync(cancellationToken));
        }
        return [.. all];
    }

    public async ValueTask<HubRevisionLookup> GetRevisionAsync(string repoId, string revision, CancellationToken cancellationToken)
    {
        foreach (var source in _sources)
        {
            var lookup = await source.GetRevisionAsync(repoId, revision, cancellationToken);
            if (lookup.Status != HubRevisionStatus.RepositoryNotFound)
            {
                return lookup;
            }
        }
        return HubRevisionLookup.RepositoryNotFound;
    }
}
