using SensMerging.Abstractions;

namespace SensMerging.Scorers;

/// <summary>
/// Sens-Merging's task-specific score: for each expert on its own calibration data,
/// S^l = (1/m) sum_x sum_{p in group l} |theta_p * dL(x)/dtheta_p| (absolute value per sample, gradient at the expert's
/// weights, FP32). Rows: experts; columns: layer groups in model order.
/// </summary>
public sealed class SensitivityScorer : IScorer
{
    public const string ScorerName = "sensitivity";

    public string Name => ScorerName;

    public string Description => "Per layer group, mean over calibration samples of sum |weight x gradient| (Sens-Merging task-specific score).";

    public IReadOnlyList<ParameterSpec> Parameters { get; } = [Calibration.SamplesSpec, Calibration.MaxLengthSpec];

    public ScorerKind Kind => ScorerKind.TaskSpecific;

    public Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken) =>
        Task.Run(() => GradientScoring.Run(ScorerName, GradientStatistic.WeightTimesGradient, context, cancellationToken), cancellationToken);
}
