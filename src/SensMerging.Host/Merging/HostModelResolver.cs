using SensMerging.Core.Config;
using SensMerging.Hub.Client;

namespace SensMerging.Host.Merging;

/// <summary>Local folders as they are; Hub references pulled into the shared cache (only what is missing) and pinned to their commit.</summary>
public sealed class HostModelResolver : IModelReferenceResolver
{
    private readonly HubCache _hub;
    private readonly LocalModelReferenceResolver _local = new();

    public HostModelResolver(HubCache hub) => _hub = hub;

    public async Task<ResolvedModel> ResolveAsync(ModelReference reference, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reference);
        if (reference.IsLocal)
        {
            return await _local.ResolveAsync(reference, cancellationToken);
        }
        var snapshot = await _hub.EnsureSnapshotAsync(reference.Repo!, reference.Revision, cancellationToken);
        return new ResolvedModel(reference, snapshot.SnapshotDirectory, snapshot.Commit);
    }
}
