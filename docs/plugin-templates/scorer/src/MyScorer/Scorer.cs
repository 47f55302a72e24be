using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace MyScorer;

/// <summary>The plugin's one configurator: registers its components as singletons.</summary>
public sealed class Plugin : IPluginConfigurator
{
    /// <inheritdoc />
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IScorer, Scorer>();
}

/// <summary>
/// A task-specific scorer: for each expert on its own calibration data, the mean over samples x of the gradient norm
/// of each layer group l, <c>S^l = (1/m) sum_x sqrt(sum_{p in l} (dL(x)/dtheta_p)^2)</c>, with L the runtime's mean
/// next-token loss of the sample. Rows: experts; columns: layer groups in model order. A decorator such as
/// <c>sens</c> uses it with <c>task_scorer: my_component</c>.
/// </summary>
public sealed class Scorer : IScorer
{
    /// <summary>What decorators (and configs) name this scorer by.</summary>
    public string Name => "my_component";

    /// <inheritdoc />
    public string Description => "Per layer group, mean over calibration samples of the L2 norm of the loss gradient.";

    /// <summary>None: the calibration samples and their length come with each expert's data (a decorator may cut them).</summary>
    public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

    /// <inheritdoc />
    public ScorerKind Kind => ScorerKind.TaskSpecific;

    /// <inheritdoc />
    public Task<ScoreTable> ScoreAsync(ScoringContext context, CancellationToken cancellationToken) =>
        Task.Run(() => Score(context, cancellationToken), cancellationToken);

    private ScoreTable Score(ScoringContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        string[]? groups = null;
        var rows = new double[context.Models.Count][];
        var samples = 0;
        for (var i = 0; i < context.Models.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var expert = context.Models[i];
            var data = expert.Data is { Samples.Count: > 0 } d ? d
                : throw new InvalidOperationException($"{Name}: expert '{expert.Name}' has no calibration data");
            // The caller owns the loaded model: dispose it (it holds the weights' native memory).
            using var model = context.Runtime.Load(expert.ModelPath, new ModelLoadOptions(context.Device, ScalarType.Float32, RequiresGrad: true), cancellationToken);
            var weights = model.NamedWeights;
            var modelGroups = weights.Select(w => LayerGroups.Of(w.Name)).Distinct().OrderBy(LayerGroups.SortKey).ToArray();
            if (groups is not null && !groups.SequenceEqual(modelGroups))
            {
                throw new InvalidOperationException($"{Name}: expert '{expert.Name}' has other layer groups than expert '{context.Models[0].Name}'");
            }
            groups = modelGroups;
            var groupOf = weights.Select(w => Array.IndexOf(groups, LayerGroups.Of(w.Name))).ToArray();

            var sums = new double[groups.Length];
            var used = 0;
            foreach (var sample in data.Samples)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var tokens = model.Tokenizer.Encode(sample, data.MaxLength);
                if (!tokens.LossMask.Take(tokens.Length - 1).Any(scored => scored))
                {
                    continue; // nothing to predict in this sample
                }
                model.ZeroGradients();
                // Every tensor the forward pass makes (activations, the loss) is disposed with the scope; the
                // gradients stay on the weights.
                using (var scope = NewDisposeScope())
                {
                    model.Loss(tokens).backward();
                }
                var squares = new double[groups.Length];
                using (var scope = NewDisposeScope())
                using (no_grad())
                {
                    for (var k = 0; k < weights.Count; k++)
                    {
                        // .grad returns a new handle each time and square() a new tensor: both die with the scope.
                        if (weights[k].Weight.grad is { } grad)
                        {
                            squares[groupOf[k]] += grad.square().sum(ScalarType.Float64).item<double>();
                        }
                    }
                }
                for (var g = 0; g < groups.Length; g++)
                {
                    sums[g] += Math.Sqrt(squares[g]);
                }
                used++;
            }
            model.ZeroGradients();
            if (used == 0)
            {
                throw new InvalidOperationException($"{Name}: no calibration sample of expert '{expert.Name}' has a token to predict");
            }
            rows[i] = [.. sums.Select(s => s / used)];
            samples += used;
        }
        return new ScoreTable(Name, Kind, [.. context.Models.Select(m => m.Name)], groups ?? [], rows)
        {
            Details = new Dictionary<string, double> { ["samples"] = samples },
        };
    }
}
