using SensMerging.Abstractions;

namespace SensMerging.Evaluators;

/// <summary>
/// Exact-match accuracy by greedy decoding: the share of a task's held-out samples whose generated answer equals the
/// reference response after whitespace normalisation (trimmed, inner runs of whitespace collapsed to one space).
/// Rows: models; columns: tasks (see <see cref="EvaluationGrid"/>); values in [0, 1].
/// </summary>
public sealed class ExactMatchScorer : IScorer
{
    public const string ScorerName = "exact_match";

    public string Name => ScorerName;

    public string Description => "Exact-match accuracy of greedy answers on each task's held-out set (whitespace-normalised).";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        EvaluationParameters.SamplesSpec,
        EvaluationParameters.MaxNewTokensSpec,
        EvaluationParameters.MaxLengthSpec,
        EvaluationParameters.BatchSizeSpec,
    ];

    public ScorerKind Kind => ScorerKind.Evaluation;

    public Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        var settings = EvaluationParameters.Read(context.Parameters);
        return Task.Run(
            () => EvaluationRunner.Run(context, ScorerName, (model, data) =>
            {
                var samples = EvaluationParameters.Take(data, settings.Samples);
                var references = samples.Select(s => s.Response ?? throw new InvalidOperationException(
                    $"task '{data.Task}' ('{data.SourcePath}') has a sample without a response: exact_match needs prompt/response pairs.")).ToList();
                var decoded = GreedyDecoder.Generate(model, samples.Select(s => s.Prompt).ToList(), settings.MaxNewTokens, EvaluationParameters.EffectiveMaxLength(data, settings.MaxLength), settings.BatchSize, cancellationToken);
                return new EvaluationRunner.CellResult(Accuracy(decoded.Texts, references), samples.Count, decoded.GeneratedTokens);
            }, cancellationToken),
            cancellationToken);
    }

    /// <summary>Share of positions where the normalised prediction equals the normalised reference.</summary>
    public static double Accuracy(IReadOnlyList<string> predictions, IReadOnlyList<string> references)
    {
        ArgumentNullException.ThrowIfNull(predictions);
        ArgumentNullException.ThrowIfNull(references);
        if (predictions.Count != references.Count)
        {
            throw new ArgumentException($"{predictions.Count} predictions for {references.Count} references.", nameof(predictions));
        }
        if (references.Count == 0)
        {
            throw new ArgumentException("No references to compare with.", nameof(references));
        }
        var hits = 0;
        for (var i = 0; i < references.Count; i++)
        {
            if (string.Equals(Normalize(predictions[i]), Normalize(references[i]), StringComparison.Ordinal))
            {
                hits++;
            }
        }
        return (double)hits / references.Count;
    }

    /// <summary>Trims and collapses every run of whitespace to one space.</summary>
    public static string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return string.Join(' ', text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
    }
}
