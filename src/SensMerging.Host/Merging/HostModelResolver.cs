using System.Collections.Concurrent;
using SensMerging.Core.Config;
using SensMerging.Hub.Client;

namespace SensMerging.Host.Merging;

/// <summary>
/// Local folders as they are; Hub references pulled into the shared cache (only what is missing) and pinned to their
/// commit. A repository revision is resolved (and its cached blobs verified) once per process, and the SHA-256 the
/// pull verified is kept, so several merges over the same experts (the demo runs twelve) neither re-verify nor
/// re-hash the inputs.
/// </summary>
public sealed class HostModelResolver : IModelReferenceResolver
{
    private readonly HubCache _hub;
    private readonly LocalModelReferenceResolver _local = new();
    private readonly ConcurrentDictionary<(string Repo, string Revision), PulledSnapshot> _snapshots = new();

    public HostModelResolver(HubCache hub) => _hub = hub;

    /// <summary>The Hub cache root that Hub references are pulled into.</summary>
    public string CacheDirectory => _hub.CacheDirectory;

    public async Task<ResolvedModel> ResolveAsync(ModelReference reference, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reference);
        if (reference.Lora is { } lora)
        {
            var model = await ResolveAsync(reference.WithoutLora(), cancellationToken);
            var adapter = lora.IsLocal ? LocalModelReferenceResolver.ResolveLocalAdapter(lora) : await PullAsync(lora, cancellationToken);
            return model with { Reference = reference, Adapter = adapter };
        }
        if (reference.IsLocal)
        {
            return await _local.ResolveAsync(reference, cancellationToken);
        }
        return await PullAsync(reference, cancellationToken);
    }

    private async Task<ResolvedModel> PullAsync(ModelReference reference, CancellationToken cancellationToken)
    {
        var key = (reference.Repo!, reference.Revision ?? "main");
        if (!_snapshots.TryGetValue(key, out var snapshot))
        {
            snapshot = await _hub.EnsureSnapshotAsync(key.Item1, key.Item2, cancellationToken);
            _snapshots[key] = snapshot;
        }
        return new ResolvedModel(reference, snapshot.SnapshotDirectory, snapshot.Commit);
    }

    /// <summary>SHA-256 by relative path of the files a pull verified into <paramref name="folder"/> (empty for local folders).</summary>
    public IReadOnlyDictionary<string, string> VerifiedSha256(string folder) =>
        _snapshots.Values.FirstOrDefault(s => string.Equals(s.SnapshotDirectory, folder, StringComparison.Ordinal)) is { } snapshot
            ? snapshot.Files.Where(f => f.Sha256 is not null).ToDictionary(f => f.Path, f => f.Sha256!, StringComparer.Ordinal)
            : new Dictionary<string, string>();
}
