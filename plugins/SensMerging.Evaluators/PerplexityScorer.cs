using SensMerging.Abstractions;

namespace SensMerging.Evaluators;

/// <summary>
/// Perplexity of the reference responses of each task's held-out set: <c>exp(total NLL / total tokens)</c> over the
/// response tokens and their EOS (the tokenizer's loss mask), token-weighted across samples. Lower is better.
/// Rows: models; columns: tasks (see <see cref="EvaluationGrid"/>).
/// </summary>
public sealed class PerplexityScorer : IScorer
{
    public const string ScorerName = "perplexity";

    public string Name => ScorerName;

    public string Description => "Perplexity of the reference responses of each task's held-out set (exp of the mean token NLL).";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        EvaluationParameters.SamplesSpec,
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
                var (nll, tokens) = ResponseLikelihood.Sum(model, samples, EvaluationParameters.EffectiveMaxLength(data, settings.MaxLength), settings.BatchSize, cancellationToken);
                if (tokens == 0)
                {
                    throw new InvalidOperationException($"task '{data.Task}' ('{data.SourcePath}') has no response tokens to score after truncation.");
                }
                return new EvaluationRunner.CellResult(Math.Exp(nll / tokens), samples.Count, tokens);
            }, cancellationToken),
            cancellationToken);
    }
}
