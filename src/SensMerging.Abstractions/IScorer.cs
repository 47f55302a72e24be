using Microsoft.Extensions.Logging;

namespace SensMerging.Abstractions;

/// <summary>What a scorer's table is indexed by.</summary>
public enum ScorerKind
{
    /// <summary>Rows: experts; columns: layer groups (for example sensitivity, Fisher information).</summary>
    TaskSpecific,

    /// <summary>Rows: expert i; columns: task j; entries g_ij (for example logit alignment). Diagonal unused.</summary>
    CrossTask,

    /// <summary>Rows: models; columns: tasks; entries a metric (for example exact-match accuracy, perplexity).</summary>
    Evaluation,
}

/// <summary>
/// Produces numbers per (expert, layer group) or per (expert, task) from a model runtime and calibration data.
/// Scorers never merge.
/// </summary>
public interface IScorer : IPluginComponent
{
    /// <summary>What the rows and columns of the scorer's table mean.</summary>
    ScorerKind Kind { get; }

    /// <summary>Computes the scorer's table.</summary>
    /// <param name="context">The models, their data, the runtime, the resolved parameters and the logger.</param>
    /// <param name="cancellationToken">Cancels the scoring.</param>
    /// <returns>A table whose rows follow <see cref="ScoringContext.Models"/> and whose kind is <see cref="Kind"/>.</returns>
    Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken);
}

/// <summary>A table of scores: <c>Values[row][column]</c>.</summary>
/// <param name="Scorer">The scorer's name.</param>
/// <param name="Kind">What rows and columns mean.</param>
/// <param name="Rows">Row labels (experts or models).</param>
/// <param name="Columns">Column labels (layer groups or tasks).</param>
/// <param name="Values">The numbers, one array per row.</param>
public sealed record ScoreTable(string Scorer, ScorerKind Kind, IReadOnlyList<string> Rows, IReadOnlyList<string> Columns, IReadOnlyList<double[]> Values)
{
    /// <summary>Named figures that describe how the table was made (samples used, tokens, seconds...).</summary>
    public IReadOnlyDictionary<string, double> Details { get; init; } = new Dictionary<string, double>();

    /// <summary>The value at <paramref name="row"/>, <paramref name="column"/> (<c>Values[row][column]</c>).</summary>
    /// <param name="row">Row index (expert or model).</param>
    /// <param name="column">Column index (layer group or task).</param>
    public double this[int row, int column] => Values[row][column];
}

/// <summary>Everything a scorer may read.</summary>
public sealed record ScoringContext
{
    /// <summary>The experts (or, for evaluation, the models) to score, with their calibration or evaluation data.</summary>
    public required IReadOnlyList<ScoredModel> Models { get; init; }

    /// <summary>The base model, when the merge has one.</summary>
    public ScoredModel? Base { get; init; }

    /// <summary>Loads models for forward and backward passes.</summary>
    public required IModelRuntime Runtime { get; init; }

    /// <summary>The scorer's parameters (defaults applied).</summary>
    public required ResolvedParameters Parameters { get; init; }

    /// <summary>Where the scorer reports progress.</summary>
    public required ILogger Logger { get; init; }

    /// <summary>Compute device, <c>cpu</c> or <c>cuda</c>.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>
    /// Memory budget in bytes for a model the scorers load (<see cref="ModelLoadOptions.MaxMemoryBytes"/>), or null for
    /// no limit (contract 1.5). Beyond it the runtime streams the weights from disk block by block.
    /// </summary>
    public long? MaxMemoryBytes { get; init; }
}

/// <summary>A model to score and the data of its task.</summary>
/// <param name="Name">The name used in tables (the config's model reference or an alias).</param>
/// <param name="ModelPath">A local folder in the Hugging Face layout.</param>
/// <param name="Data">The calibration (or evaluation) set of this model's task, if any.</param>
public sealed record ScoredModel(string Name, string ModelPath, TextDataset? Data);

/// <summary>Samples of one task, already limited to the configured count.</summary>
/// <param name="Task">The task's name.</param>
/// <param name="SourcePath">The file the samples came from.</param>
/// <param name="Samples">The samples.</param>
/// <param name="MaxLength">Tokens per sample after truncation.</param>
public sealed record TextDataset(string Task, string SourcePath, IReadOnlyList<TextSample> Samples, int MaxLength);

/// <summary>One sample: plain text, or a prompt with its response (loss and scoring on the response).</summary>
/// <param name="Prompt">The text, or the prompt when a response follows.</param>
/// <param name="Response">The response, or null for plain text.</param>
public sealed record TextSample(string Prompt, string? Response = null)
{
    /// <summary>The prompt followed directly by the response (no separator), or the prompt alone.</summary>
    public string FullText => Response is null ? Prompt : Prompt + Response;
}
