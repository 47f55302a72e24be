using SensMerging.Abstractions;

namespace SensMerging.Scorers;

/// <summary>
/// Empirical Fisher information per layer group, an alternative task-specific score:
/// F^l = (1/m) sum_x sum_{p in group l} (dL(x)/dtheta_p)^2. Rows: experts; columns: layer groups in model order.
/// </summary>
public sealed class FisherScorer : IScorer
{
    public const string ScorerName = "fisher";

    public string Name => ScorerName;

    public string Description => "Per layer group, mean over calibration samples of the sum of squared gradients (empirical Fisher).";

    public IReadOnlyList<ParameterSpec> Parameters { get; } = [Calibration.SamplesSpec, Calibration.MaxLengthSpec];

    public ScorerKind Kind => ScorerKind.TaskSpecific;

    public Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken) =>
        Task.Run(() => GradientScoring.Run(ScorerName, GradientStatistic.SquaredGradient, context, cancellationToken), cancellationToken);
}
