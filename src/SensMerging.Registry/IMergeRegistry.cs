namespace SensMerging.Registry;

/// <summary>
/// The merge-history registry: one record per merge, written as running first and completed only once the output
/// is complete and hashed. Safe to use from several processes at once (a merge and <c>serve</c>).
/// </summary>
public interface IMergeRegistry
{
    /// <summary>The registry file.</summary>
    string FilePath { get; }

    /// <summary>
    /// Writes <paramref name="draft"/> as <see cref="MergeStatus.Running"/>, owned by this process. Assigns the id
    /// when empty and the times when unset. Returns the stored record.
    /// </summary>
    Task<MergeRecord> BeginAsync(MergeRecord draft, CancellationToken cancellationToken = default);

    /// <summary>
    /// Applies <paramref name="update"/> to the stored record atomically (read, change, write under the registry
    /// lock), for scores and coefficients as they arrive. The update may not change the id or the status.
    /// </summary>
    Task<MergeRecord> UpdateAsync(string id, Func<MergeRecord, MergeRecord> update, CancellationToken cancellationToken = default);

    /// <summary>
    /// Marks a running merge <see cref="MergeStatus.Succeeded"/> with its outputs. Call only after the output folder
    /// is complete and every file hashed: the files listed must exist with the sizes given.
    /// </summary>
    Task<MergeRecord> CompleteAsync(string id, MergeOutputs outputs, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default);

    /// <summary>Marks a running merge failed with the exception (an <see cref="OperationCanceledException"/> marks it cancelled).</summary>
    Task<MergeRecord> FailAsync(string id, Exception exception, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default);

    /// <summary>Marks a running merge cancelled.</summary>
    Task<MergeRecord> CancelAsync(string id, string? reason = null, IReadOnlyDictionary<string, double>? durations = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Turns running records whose owning process no longer exists (same machine; PID and start time checked) into
    /// failed ones ("process ended while merging"). Returns their ids. Runs on open and before every list.
    /// </summary>
    Task<IReadOnlyList<string>> MarkAbandonedAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Adds an evaluation to a merge: <paramref name="idOrModelRef"/> is a record id (or unique prefix), or a model
    /// reference (output folder or served repo id) of a merge's output. Returns the record's id.
    /// </summary>
    Task<string> AddEvaluationAsync(string idOrModelRef, EvaluationResult evaluation, CancellationToken cancellationToken = default);

    /// <summary>
    /// Summaries matching every given filter, in <see cref="MergeQuery.Sort"/> order (newest first by default), after
    /// skipping <see cref="MergeQuery.Offset"/> of them. The one listing query: <c>registry list</c>, the web pages of
    /// <c>serve</c> and its <c>/api/registry/merges</c> all call it.
    /// </summary>
    Task<IReadOnlyList<MergeSummary>> ListAsync(MergeQuery query, CancellationToken cancellationToken = default);

    /// <summary>The record with this id or unique id prefix; null when none. Throws <see cref="AmbiguousMergeIdException"/> for a prefix of several.</summary>
    Task<MergeRecord?> GetAsync(string idOrPrefix, CancellationToken cancellationToken = default);

    /// <summary>The merges that produced a model (by output folder or served repo id) and those that used it as input, with the producers' own ancestry.</summary>
    Task<ModelLineage> LineageAsync(string modelRef, CancellationToken cancellationToken = default);

    /// <summary>
    /// Only the merges that produced a model (by output folder or served repo id), newest first: one index lookup per
    /// key of the reference, without the merges that used it or anyone's ancestry.
    /// </summary>
    Task<IReadOnlyList<MergeSummary>> ProducersAsync(string modelRef, CancellationToken cancellationToken = default);

    /// <summary>
    /// The lineage of one merge as a bounded graph: the merges that produced its inputs and, transitively, theirs; the
    /// merges that used its output and, transitively, what was made from those. At most <see cref="LineageBounds.Depth"/>
    /// generations each way and <see cref="LineageBounds.Width"/> merges per generation; what is left out is counted in
    /// <see cref="LineageGraph.Cuts"/>. Every step is an index lookup on the model keys, so the cost follows the bounds,
    /// not the size of the registry. Null when no merge has the id <paramref name="id"/>.
    /// </summary>
    Task<LineageGraph?> LineageGraphAsync(string id, LineageBounds bounds, CancellationToken cancellationToken = default);

    /// <summary>The record as JSON (schema in docs/registry.md). Throws <see cref="MergeNotFoundException"/> when absent.</summary>
    Task<string> ExportAsync(string idOrPrefix, CancellationToken cancellationToken = default);

    /// <summary>Number of records.</summary>
    Task<int> CountAsync(CancellationToken cancellationToken = default);
}

/// <summary>Filters for <see cref="IMergeRegistry.ListAsync"/>; null means any.</summary>
public sealed record MergeQuery
{
    /// <summary>A model reference that appears among the inputs or as the output (repo id with or without <c>@revision</c>, alias, or folder).</summary>
    public string? Model { get; init; }

    /// <summary>The strategy component name (for example <c>ties</c>), case-insensitive.</summary>
    public string? Strategy { get; init; }

    /// <summary>Only merges created at or after this time (UTC).</summary>
    public DateTime? Since { get; init; }

    /// <summary>Only merges created before this time (UTC).</summary>
    public DateTime? Until { get; init; }

    public MergeStatus? Status { get; init; }

    /// <summary>A decorator component name in the chain (for example <c>sens</c>), case-insensitive.</summary>
    public string? Decorator { get; init; }

    /// <summary>
    /// Text found (case-insensitive) in the id, the method, an input reference, a tag or the output (repo id or folder).
    /// </summary>
    public string? Search { get; init; }

    /// <summary>Order of the result.</summary>
    public MergeSort Sort { get; init; } = MergeSort.Newest;

    /// <summary>
    /// For <see cref="MergeSort.Score"/>: the evaluation to sort by, <c>task/metric</c> (a key of
    /// <see cref="MergeSummary.Scores"/>); null sorts by each merge's first score. Highest first; merges without it last.
    /// </summary>
    public string? ScoreKey { get; init; }

    /// <summary>Matches to skip (in result order) before the first one returned: the start of a page.</summary>
    public int Offset { get; init; }

    /// <summary>At most this many summaries; 0 means no limit.</summary>
    public int Limit { get; init; } = 50;

    public static MergeQuery All { get; } = new() { Limit = 0 };
}

/// <summary>Orders of <see cref="IMergeRegistry.ListAsync"/>.</summary>
public enum MergeSort
{
    /// <summary>Newest first (creation time).</summary>
    Newest,

    /// <summary>Oldest first.</summary>
    Oldest,

    /// <summary>Highest evaluation score first (<see cref="MergeQuery.ScoreKey"/>), then newest.</summary>
    Score,
}

/// <summary>One line of <c>registry list</c>.</summary>
public sealed record MergeSummary
{
    public required string Id { get; init; }

    public MergeStatus Status { get; init; }

    public DateTime CreatedAt { get; init; }

    public DateTime? FinishedAt { get; init; }

    /// <summary>The strategy's component name, with the decorator chain: <c>sens(ties)</c>.</summary>
    public string Method { get; init; } = string.Empty;

    public string? Strategy { get; init; }

    public IReadOnlyList<string> Decorators { get; init; } = [];

    /// <summary>Input references as written, base first.</summary>
    public IReadOnlyList<string> Inputs { get; init; } = [];

    public string? OutputFolder { get; init; }

    public string? OutputRepoId { get; init; }

    public long? OutputBytes { get; init; }

    public double? TotalSeconds { get; init; }

    public string? Error { get; init; }

    public IReadOnlyList<string> Tags { get; init; } = [];

    /// <summary>
    /// The latest evaluation of the merged model per <c>task/metric</c> (evaluations of its inputs left out), in the
    /// order first recorded. Empty for summaries written by a registry before schema version 3 until migrated.
    /// </summary>
    public IReadOnlyDictionary<string, double> Scores { get; init; } = new Dictionary<string, double>();

    public static MergeSummary From(MergeRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        var inputs = record.Inputs.OrderBy(i => i.Role == ModelRole.Base ? 0 : 1).Select(i => i.Reference).ToArray();
        return new MergeSummary
        {
            Id = record.Id,
            Status = record.Status,
            CreatedAt = record.CreatedAt,
            FinishedAt = record.FinishedAt,
            Method = MethodName(record),
            Strategy = record.Strategy?.Component,
            Decorators = [.. record.Decorators.Select(d => d.Plugin.Component)],
            Inputs = inputs,
            OutputFolder = record.Outputs?.Folder,
            OutputRepoId = record.Outputs?.RepoId,
            OutputBytes = record.Outputs?.TotalBytes,
            TotalSeconds = record.Durations.TryGetValue(Phases.Total, out var t) ? t : null,
            Error = record.Error?.Message,
            Tags = record.Tags,
            Scores = ScoresOf(record),
        };
    }

    /// <summary>The key of an evaluation in <see cref="Scores"/>: <c>task/metric</c>.</summary>
    public static string ScoreKeyOf(EvaluationResult evaluation)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        return evaluation.Task + "/" + evaluation.Metric;
    }

    private static Dictionary<string, double> ScoresOf(MergeRecord record)
    {
        var inputNames = new HashSet<string>(record.Inputs.SelectMany(i => new[] { i.Name, i.Reference }), StringComparer.Ordinal);
        var scores = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var e in record.Evaluations.Where(e => !inputNames.Contains(e.Model)).OrderBy(e => e.RecordedAt))
        {
            scores[ScoreKeyOf(e)] = e.Value;
        }
        return scores;
    }

    /// <summary>The strategy wrapped by its decorators, outermost first: <c>sens(ties)</c>.</summary>
    public static string MethodName(MergeRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        var name = record.Strategy?.Component ?? "?";
        for (var i = record.Decorators.Count - 1; i >= 0; i--)
        {
            name = record.Decorators[i].Plugin.Component + "(" + name + ")";
        }
        return name;
    }
}

/// <summary>Where a model came from and where it went.</summary>
/// <param name="Reference">The model reference asked about.</param>
/// <param name="ProducedBy">Merges whose output is this model (normally one; several when re-made into the same folder).</param>
/// <param name="UsedBy">Merges that took this model as an input.</param>
/// <param name="Ancestry">For each producing merge, its inputs and (recursively) the merges that produced them.</param>
public sealed record ModelLineage(string Reference, IReadOnlyList<MergeSummary> ProducedBy, IReadOnlyList<MergeSummary> UsedBy, IReadOnlyList<LineageNode> Ancestry);

/// <summary>A merge in a model's ancestry and, per input, the merges that produced that input.</summary>
public sealed record LineageNode(MergeSummary Merge, IReadOnlyList<LineageInput> Inputs);

/// <summary>An input of a merge in the ancestry; <see cref="ProducedBy"/> is empty for models not made by a recorded merge.</summary>
public sealed record LineageInput(string Reference, string? ResolvedCommit, IReadOnlyList<LineageNode> ProducedBy);

/// <summary>Bounds of <see cref="IMergeRegistry.LineageGraphAsync"/>.</summary>
public sealed record LineageBounds
{
    /// <summary>The most generations followed each way (1 to 16).</summary>
    public int Depth { get; init; } = 4;

    /// <summary>The most merges kept per generation each way (1 to 64), newest first; the others are counted as cut.</summary>
    public int Width { get; init; } = 8;

    /// <summary>Throws when a bound is out of its range.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Depth, 1, nameof(Depth));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(Depth, 16, nameof(Depth));
        ArgumentOutOfRangeException.ThrowIfLessThan(Width, 1, nameof(Width));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(Width, 64, nameof(Width));
    }
}

/// <summary>A merge's lineage as a graph (see <see cref="IMergeRegistry.LineageGraphAsync"/>).</summary>
/// <param name="Root">The merge asked about (also the node of generation 0).</param>
/// <param name="Nodes">Every merge kept: the root, then the ancestors nearest first, then the descendants nearest first; newest first within a generation.</param>
/// <param name="Edges">Producer to consumer, between kept merges only.</param>
/// <param name="Cuts">Per generation, the merges left out by the width bound, or found one generation past the depth bound.</param>
public sealed record LineageGraph(MergeSummary Root, IReadOnlyList<LineageGraphNode> Nodes, IReadOnlyList<LineageGraphEdge> Edges, IReadOnlyList<LineageGraphCut> Cuts);

/// <summary>A merge in a lineage graph.</summary>
/// <param name="Merge">Its summary.</param>
/// <param name="Generation">0 for the root; -1 for the merges that produced its inputs, -2 for theirs; +1 for the merges that used its output, +2 for theirs.</param>
public sealed record LineageGraphNode(MergeSummary Merge, int Generation);

/// <summary>The output of merge <paramref name="From"/> was an input of merge <paramref name="To"/>.</summary>
/// <param name="From">The producing merge's id.</param>
/// <param name="To">The consuming merge's id.</param>
/// <param name="Input">The consumer's input reference that named the output, when it names it by folder or repo id (null when only a resolved path or commit matched).</param>
public sealed record LineageGraphEdge(string From, string To, string? Input);

/// <summary>Merges of one generation that a lineage graph leaves out.</summary>
/// <param name="Generation">The generation (negative: ancestors; positive: descendants); one past the depth bound when the graph stops there.</param>
/// <param name="Count">How many were found and left out.</param>
/// <param name="AtLeast">True when a lookup stopped at its scan limit, so there may be more than <paramref name="Count"/>.</param>
public sealed record LineageGraphCut(int Generation, int Count, bool AtLeast);
