using SensMerging.Abstractions;

namespace SensMerging.Registry;

/// <summary>Where a merge stands. A record is written <see cref="Running"/> first and reaches one final state.</summary>
public enum MergeStatus
{
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// <summary>The role an input model plays in a merge.</summary>
public enum ModelRole
{
    Expert,
    Base,
}

/// <summary>
/// One merge: what went in (models with pinned commits and file hashes, plugins with versions and hashes, config,
/// parameters, seed), what was computed on the way (score tables, coefficients), what came out (files with hashes),
/// evaluations added later, and timings. Immutable; the registry's lifecycle methods produce updated copies.
/// </summary>
public sealed record MergeRecord
{
    /// <summary>Short, time-sortable, unique: <c>m-yyyyMMdd-HHmmss-xxxxxx</c>. Assigned by <see cref="IMergeRegistry.BeginAsync"/> when empty.</summary>
    public string Id { get; init; } = string.Empty;

    public MergeStatus Status { get; init; } = MergeStatus.Running;

    /// <summary>UTC time the record was first written.</summary>
    public DateTime CreatedAt { get; init; }

    /// <summary>UTC time the merge started (resolution of inputs included).</summary>
    public DateTime StartedAt { get; init; }

    /// <summary>UTC time the merge reached its final state; null while running.</summary>
    public DateTime? FinishedAt { get; init; }

    /// <summary>Why the merge failed or was cancelled; null otherwise.</summary>
    public MergeError? Error { get; init; }

    /// <summary>The sensmerge version that ran the merge.</summary>
    public string HostVersion { get; init; } = string.Empty;

    /// <summary>The process that runs (or ran) the merge; used to detect merges whose process was killed.</summary>
    public ProcessOwner? Owner { get; init; }

    /// <summary>The configuration text exactly as given (YAML).</summary>
    public string ConfigText { get; init; } = string.Empty;

    /// <summary>Path of the configuration file, when there was one.</summary>
    public string? ConfigPath { get; init; }

    /// <summary>The configuration as resolved (defaults applied, references pinned), as JSON or YAML text.</summary>
    public string ResolvedConfig { get; init; } = string.Empty;

    /// <summary>The merge strategy plugin.</summary>
    public PluginRef? Strategy { get; init; }

    /// <summary>The decorator chain, outermost first.</summary>
    public IReadOnlyList<DecoratorRef> Decorators { get; init; } = [];

    /// <summary>Scorer plugins the decorators ran.</summary>
    public IReadOnlyList<PluginRef> Scorers { get; init; } = [];

    /// <summary>Input models in merge order (base and experts).</summary>
    public IReadOnlyList<ModelInput> Inputs { get; init; } = [];

    /// <summary>The random seed, when the merge used one.</summary>
    public long? Seed { get; init; }

    /// <summary>The config's <c>dtype</c> (mergekit's: inputs cast to it, output written in it unless <see cref="OutDtype"/>); null: as stored.</summary>
    public string? Dtype { get; init; }

    /// <summary>The dtype the output was written in when one was asked for: <c>--dtype</c> on the command line, else the config's <c>out_dtype</c>.</summary>
    public string? OutDtype { get; init; }

    /// <summary>
    /// <c>float32</c> when the merge was asked to compute in float32 (<c>--compute-dtype float32</c>) instead of reproducing
    /// mergekit's per-operation rounding in a half-precision <see cref="Dtype"/>; null: mergekit's rule.
    /// </summary>
    public string? ComputeDtype { get; init; }

    /// <summary>Global parameters (mergekit top-level <c>parameters</c>).</summary>
    public IReadOnlyDictionary<string, ParameterValue> Parameters { get; init; } = new Dictionary<string, ParameterValue>();

    /// <summary>Per-model parameters, keyed by the input's name.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, ParameterValue>> ModelParameters { get; init; } =
        new Dictionary<string, IReadOnlyDictionary<string, ParameterValue>>();

    /// <summary>Scorer outputs (rows x columns), the contract's <see cref="ScoreTable"/> shape.</summary>
    public IReadOnlyList<ScoreTableRecord> ScoreTables { get; init; } = [];

    /// <summary>The coefficients applied, per (expert, layer group), and the intermediate tables (alpha, tau, sigma).</summary>
    public CoefficientSet? Coefficients { get; init; }

    /// <summary>What each decorator ran with (temperature, alignment reading, scorers...), keyed by decorator name.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, ParameterValue>> DecoratorSettings { get; init; } =
        new Dictionary<string, IReadOnlyDictionary<string, ParameterValue>>();

    /// <summary>
    /// Problems found in the input data that did not stop the merge (without <c>--strict</c>): non-finite values in an
    /// input tensor, tensors of an input that the reference model lacks. Empty in records written before the field existed.
    /// </summary>
    public IReadOnlyList<MergeWarning> Warnings { get; init; } = [];

    /// <summary>The merged model; null until the merge succeeded.</summary>
    public MergeOutputs? Outputs { get; init; }

    /// <summary>
    /// The temporary folder (<c>&lt;out&gt;.partial-&lt;12 hex digits&gt;</c>) the merge writes before moving it into place;
    /// kept as history. When the merge's process ends without closing the record, the registry removes this folder as
    /// it marks the record failed (<c>ProcessEnded</c>) and names it in the error message.
    /// </summary>
    public string? PartialFolder { get; init; }

    /// <summary>Evaluation results recorded for the merged model (and, optionally, its inputs).</summary>
    public IReadOnlyList<EvaluationResult> Evaluations { get; init; } = [];

    /// <summary>
    /// Where the merged model was pushed (<c>sensmerge hub push</c>), oldest first: hub, repository, branch and commit.
    /// Empty in records written before the field existed.
    /// </summary>
    public IReadOnlyList<MergePublication> Publications { get; init; } = [];

    /// <summary>Seconds per named phase: resolve, scoring, merge, hashing, total (<see cref="Phases"/>).</summary>
    public IReadOnlyDictionary<string, double> Durations { get; init; } = new Dictionary<string, double>();

    /// <summary>Free labels (for example <c>demo</c>, <c>ablation:tau-off</c>).</summary>
    public IReadOnlyList<string> Tags { get; init; } = [];
}

/// <summary>Names of the duration phases the host records.</summary>
public static class Phases
{
    public const string Resolve = "resolve";
    public const string Scoring = "scoring";
    public const string Merge = "merge";
    public const string Hashing = "hashing";
    public const string Total = "total";
}

/// <summary>A failure: the exception's type and message (and its full text for diagnosis).</summary>
public sealed record MergeError(string Type, string Message)
{
    /// <summary>The exception's <c>ToString()</c> (stack trace included), cut to a few kilobytes.</summary>
    public string? Detail { get; init; }

    public static MergeError From(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var detail = exception.ToString();
        const int limit = 8192;
        return new MergeError(exception.GetType().FullName ?? exception.GetType().Name, exception.Message)
        {
            Detail = detail.Length > limit ? detail[..limit] + "..." : detail,
        };
    }
}

/// <summary>
/// A problem in the input data that the merge went through with (<c>--strict</c> makes it an error): see
/// <see cref="MergeWarningKinds"/>. Kinds are strings, so a record with a kind this build does not know still reads.
/// </summary>
/// <param name="Kind">What kind of problem (<see cref="MergeWarningKinds"/>).</param>
/// <param name="Message">The problem in words, as logged.</param>
public sealed record MergeWarning(string Kind, string Message)
{
    /// <summary>The input model concerned (its name in the merge), when one is.</summary>
    public string? Model { get; init; }

    /// <summary>The tensors concerned.</summary>
    public IReadOnlyList<string> Tensors { get; init; } = [];

    /// <summary>NaN values found (<see cref="MergeWarningKinds.NonFinite"/>).</summary>
    public long NanCount { get; init; }

    /// <summary>Infinite values found, either sign (<see cref="MergeWarningKinds.NonFinite"/>).</summary>
    public long InfCount { get; init; }
}

/// <summary>The kinds of <see cref="MergeWarning"/>.</summary>
public static class MergeWarningKinds
{
    /// <summary>An input tensor holds NaN or infinite values (one warning per tensor and model).</summary>
    public const string NonFinite = "nonFinite";

    /// <summary>An input has tensors the reference model (the base, else the first model) lacks; they are not merged (one warning per model).</summary>
    public const string ExtraTensors = "extraTensors";
}

/// <summary>Identifies a process across PID reuse: PID, machine and the process start time.</summary>
public sealed record ProcessOwner(int ProcessId, string MachineName, DateTime ProcessStartedAt);

/// <summary>A plugin component as loaded: which plugin, which component, which build.</summary>
/// <param name="PluginId">The plugin's id from its manifest.</param>
/// <param name="Component">The component's name (for example <c>ties</c>, <c>sens</c>, <c>sensitivity</c>).</param>
/// <param name="Version">The plugin's version.</param>
/// <param name="AssemblySha256">SHA-256 (hex) of the plugin's main assembly.</param>
/// <param name="ContractVersion">The plugin contract version the plugin was built for.</param>
public sealed record PluginRef(string PluginId, string Component, string Version, string AssemblySha256, string ContractVersion);

/// <summary>A decorator in the chain with the parameters it was configured with.</summary>
public sealed record DecoratorRef(PluginRef Plugin)
{
    public IReadOnlyDictionary<string, ParameterValue> Parameters { get; init; } = new Dictionary<string, ParameterValue>();
}

/// <summary>An input model as written in the config and as resolved.</summary>
public sealed record ModelInput
{
    /// <summary>The name used in tables and per-model parameters (the alias, or the reference).</summary>
    public required string Name { get; init; }

    /// <summary>The reference as written: a local folder or <c>org/name@revision</c>.</summary>
    public required string Reference { get; init; }

    /// <summary>The revision asked for (branch, tag or commit); null for local folders or no revision.</summary>
    public string? RequestedRevision { get; init; }

    /// <summary>The commit the revision resolved to (40 hex); null for plain local folders.</summary>
    public string? ResolvedCommit { get; init; }

    /// <summary>The local folder the weights were read from.</summary>
    public string? LocalPath { get; init; }

    public ModelRole Role { get; init; } = ModelRole.Expert;

    /// <summary>Every file of the model that the merge read or copied, with its hash.</summary>
    public IReadOnlyList<FileHash> Files { get; init; } = [];
}

/// <summary>A file with its SHA-256 (lowercase hex) and size in bytes. Paths are relative to the model folder.</summary>
public sealed record FileHash(string Path, string Sha256, long Size);

/// <summary>A score table as stored: the contract's <see cref="ScoreTable"/> with plain lists.</summary>
public sealed record ScoreTableRecord(string Scorer, ScorerKind Kind, IReadOnlyList<string> Rows, IReadOnlyList<string> Columns, IReadOnlyList<double[]> Values)
{
    public IReadOnlyDictionary<string, double> Details { get; init; } = new Dictionary<string, double>();

    public static ScoreTableRecord From(ScoreTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        return new ScoreTableRecord(table.Scorer, table.Kind, [.. table.Rows], [.. table.Columns], [.. table.Values.Select(r => (double[])r.Clone())])
        {
            Details = new Dictionary<string, double>(table.Details),
        };
    }

    /// <summary>True when <paramref name="other"/> holds the same numbers under the same row and column labels (names aside).</summary>
    public bool SameNumbers(ScoreTableRecord other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return Rows.SequenceEqual(other.Rows, StringComparer.Ordinal)
            && Columns.SequenceEqual(other.Columns, StringComparer.Ordinal)
            && Values.Count == other.Values.Count
            && Values.Zip(other.Values).All(p => p.First.AsSpan().SequenceEqual(p.Second));
    }

    public ScoreTable ToScoreTable() =>
        new(Scorer, Kind, Rows, Columns, Values) { Details = Details };

    /// <summary>Checks that every row has one value per column.</summary>
    public void Validate()
    {
        if (Values.Count != Rows.Count)
        {
            throw new ArgumentException($"score table '{Scorer}' has {Rows.Count} row labels but {Values.Count} rows of values");
        }
        for (var r = 0; r < Values.Count; r++)
        {
            if (Values[r] is null || Values[r].Length != Columns.Count)
            {
                throw new ArgumentException($"score table '{Scorer}' row '{Rows[r]}' has {Values[r]?.Length ?? 0} values for {Columns.Count} columns");
            }
        }
    }
}

/// <summary>
/// The per-(expert, layer group) coefficients a decorator applied, and the tables they came from.
/// <see cref="Values"/>[expert][group] is the weight multiplier used for that expert's tensors in that group.
/// </summary>
public sealed record CoefficientSet
{
    /// <summary>The decorator that produced them (for example <c>sens</c>).</summary>
    public string Decorator { get; init; } = string.Empty;

    /// <summary>Expert names, in merge order.</summary>
    public IReadOnlyList<string> Experts { get; init; } = [];

    /// <summary>Layer groups, in model order.</summary>
    public IReadOnlyList<string> LayerGroups { get; init; } = [];

    /// <summary>One array per expert, one value per layer group.</summary>
    public IReadOnlyList<double[]> Values { get; init; } = [];

    /// <summary>Intermediate tables (alpha, tau, sigma...), score-table shaped.</summary>
    public IReadOnlyList<ScoreTableRecord> Tables { get; init; } = [];

    /// <summary>The coefficient of <paramref name="expert"/> in <paramref name="layerGroup"/>.</summary>
    public double Get(string expert, string layerGroup)
    {
        var e = IndexOf(Experts, expert, "expert");
        var g = IndexOf(LayerGroups, layerGroup, "layer group");
        return Values[e][g];
    }

    /// <summary>Checks the shape: one row per expert, one column per layer group.</summary>
    public void Validate()
    {
        if (Values.Count != Experts.Count)
        {
            throw new ArgumentException($"coefficients have {Experts.Count} experts but {Values.Count} rows of values");
        }
        for (var e = 0; e < Values.Count; e++)
        {
            if (Values[e] is null || Values[e].Length != LayerGroups.Count)
            {
                throw new ArgumentException($"coefficients of expert '{Experts[e]}' have {Values[e]?.Length ?? 0} values for {LayerGroups.Count} layer groups");
            }
        }
        foreach (var t in Tables)
        {
            t.Validate();
        }
    }

    private static int IndexOf(IReadOnlyList<string> names, string name, string what)
    {
        for (var i = 0; i < names.Count; i++)
        {
            if (string.Equals(names[i], name, StringComparison.Ordinal))
            {
                return i;
            }
        }
        throw new KeyNotFoundException($"no {what} '{name}' in the coefficients (have: {string.Join(", ", names)})");
    }
}

/// <summary>The merged model as written.</summary>
public sealed record MergeOutputs
{
    /// <summary>The output folder (absolute).</summary>
    public required string Folder { get; init; }

    /// <summary>Every file written, relative to <see cref="Folder"/>, with its hash.</summary>
    public IReadOnlyList<FileHash> Files { get; init; } = [];

    /// <summary>Sum of the files' sizes.</summary>
    public long TotalBytes { get; init; }

    /// <summary>Number of tensors written.</summary>
    public int TensorCount { get; init; }

    /// <summary>The Hub repository id the model is served as, when served.</summary>
    public string? RepoId { get; init; }
}

/// <summary>One push of a merge's output to a Hub.</summary>
/// <param name="Endpoint">The Hub (HF_ENDPOINT), e.g. http://team-hub:5080 or https://huggingface.co.</param>
/// <param name="RepoId">The repository, org/name.</param>
/// <param name="Branch">The branch pushed to.</param>
/// <param name="Commit">The commit the push made.</param>
/// <param name="PublishedAt">UTC time of the push.</param>
public sealed record MergePublication(string Endpoint, string RepoId, string Branch, string Commit, DateTime PublishedAt);

/// <summary>One evaluation figure for a model on a task.</summary>
/// <param name="Model">The evaluated model (the merge's output, or an input's name).</param>
/// <param name="Task">The task (for example <c>math</c>).</param>
/// <param name="Metric">The metric (for example <c>exact_match</c>, <c>perplexity</c>).</param>
/// <param name="Value">The figure.</param>
/// <param name="Samples">How many samples it was computed on.</param>
/// <param name="RecordedAt">UTC time it was recorded.</param>
public sealed record EvaluationResult(string Model, string Task, string Metric, double Value, int Samples, DateTime RecordedAt);
