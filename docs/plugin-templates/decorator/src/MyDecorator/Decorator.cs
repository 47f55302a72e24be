using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;

namespace MyDecorator;

/// <summary>The plugin's one configurator: registers its components as singletons.</summary>
public sealed class Plugin : IPluginConfigurator
{
    /// <inheritdoc />
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IStrategyDecorator, Decorator>();
}

/// <summary>
/// Steers any strategy by a task-specific scorer's table S (rows experts, columns layer groups): expert i's weight in
/// the tensors of layer group l is multiplied by <c>c_i^l = (S_i^l / mean_j S_j^l)^strength</c> (1 where the group's
/// scores are all zero), so an expert whose score in a group is above the experts' mean weighs more there.
/// </summary>
public sealed partial class Decorator : IStrategyDecorator
{
    /// <summary>What a config's <c>decorators[].name</c> names.</summary>
    public string Name => "my_component";

    /// <inheritdoc />
    public string Description => "Scales each expert's weight per layer group by its share of a scorer's scores.";

    /// <inheritdoc />
    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        new ParameterSpec("scorer", ParameterKind.String, "fisher", ParameterScope.Global, "The task-specific scorer whose table steers the weights."),
        // Per layer group (contract 1.6): a config may give a gradient ([0, 1]: no steering in the first block, full in the
        // last) or a filter list ([{filter: lm_head, value: 0}, {value: 1}]); the host resolves it for every group.
        ParameterSpec.Float("strength", 1.0, ParameterScope.Global, "Exponent of the score ratio (0: no steering); may vary by layer group.", min: 0)
            with { PerLayerGroup = true },
    ];

    /// <inheritdoc />
    public async Task<IDecoratedStrategy> DecorateAsync(IMergeStrategy inner, DecoratorContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(context);
        var scorerName = context.Parameters.String("scorer");
        var scorer = context.Scorers.Get(scorerName);
        if (scorer.Kind != ScorerKind.TaskSpecific)
        {
            throw new InvalidOperationException($"{Name}: scorer '{scorerName}' is {scorer.Kind}; a task-specific scorer (experts x layer groups) is needed");
        }
        var scores = await scorer.ScoreAsync(new ScoringContext
        {
            Models = context.Experts,
            Base = context.Base,
            Runtime = context.Runtime,
            // The scorer gets the values of its own declared parameters from ours (none here), defaults otherwise.
            Parameters = context.Scorers.ResolveParameters(scorer, context.Parameters.Global),
            Logger = context.Logger,
            Device = context.Device,
        }, cancellationToken).ConfigureAwait(false);

        var experts = context.Experts.Select(e => e.Name).ToArray();
        var coefficients = new double[experts.Length][];
        for (var i = 0; i < experts.Length; i++)
        {
            coefficients[i] = new double[scores.Columns.Count];
        }
        var strengths = scores.Columns.Select(group => context.ParametersOf(group).Float("strength")).ToArray();
        for (var l = 0; l < scores.Columns.Count; l++)
        {
            var strength = strengths[l];
            var mean = Enumerable.Range(0, experts.Length).Average(i => scores[i, l]);
            for (var i = 0; i < experts.Length; i++)
            {
                coefficients[i][l] = mean > 0 ? Math.Pow(scores[i, l] / mean, strength) : 1.0;
            }
        }
        LogCoefficients(context.Logger, Name, scorerName, experts.Length, scores.Columns.Count);

        // A table named "coefficients" (experts x layer groups) is what the registry records as the merge's coefficients.
        var report = new DecoratorReport(Name,
            new Dictionary<string, object>
            {
                ["scorer"] = scorerName,
                // One number when every group's is the same, else layer group to strength.
                ["strength"] = strengths.Distinct().Count() <= 1
                    ? (object)strengths.DefaultIfEmpty(context.Parameters.Float("strength")).First()
                    : scores.Columns.Zip(strengths).ToDictionary(p => p.First, p => (object)p.Second),
            },
            [scores, new ScoreTable("coefficients", ScorerKind.TaskSpecific, experts, scores.Columns, coefficients)]);
        var steering = new Steering(Name, experts.Length, scores.Columns, coefficients);
        // Keep streaming when the inner strategy streams, or decorating would make the host hold whole tensors.
        return inner is IStreamingMergeStrategy streaming
            ? new DecoratedStreamingStrategy(streaming, report, steering)
            : new DecoratedStrategy(inner, report, steering);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Decorator}: coefficients from scorer {Scorer} for {Experts} experts x {Groups} layer groups")]
    private static partial void LogCoefficients(ILogger logger, string decorator, string scorer, int experts, int groups);

    /// <summary>The weights handed to the inner strategy: <c>w_i * c_i^l</c> for the tensor's layer group l.</summary>
    private sealed class Steering(string name, int experts, IReadOnlyList<string> groups, double[][] coefficients)
    {
        public IReadOnlyList<double> Weights(IReadOnlyList<double> weights, string layerGroup)
        {
            if (weights.Count != experts)
            {
                throw new InvalidOperationException($"{name}: {weights.Count} models to merge but {experts} scored experts");
            }
            var l = groups.ToList().IndexOf(layerGroup);
            return l < 0 ? weights : [.. weights.Select((w, i) => w * coefficients[i][l])];
        }
    }

    /// <summary>The inner strategy with steered weights: same name pattern, parameters and traits.</summary>
    private sealed class DecoratedStrategy(IMergeStrategy inner, DecoratorReport report, Steering steering) : IDecoratedStrategy
    {
        public IMergeStrategy Inner => inner;

        public DecoratorReport Report => report;

        public string Name => $"{report.Decorator}({inner.Name})";

        public string Description => inner.Description;

        public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

        public StrategyTraits Traits => inner.Traits;

        public void Merge(MergeTensorRequest request)
        {
            ArgumentNullException.ThrowIfNull(request);
            inner.Merge(request with { Weights = steering.Weights(request.Weights, request.LayerGroup) });
        }
    }

    /// <summary>A streaming inner strategy with steered weights: the session and every block see the same weights.</summary>
    private sealed class DecoratedStreamingStrategy(IStreamingMergeStrategy inner, DecoratorReport report, Steering steering) : IDecoratedStrategy, IStreamingMergeStrategy
    {
        public IMergeStrategy Inner => inner;

        public DecoratorReport Report => report;

        public string Name => $"{report.Decorator}({inner.Name})";

        public string Description => inner.Description;

        public IReadOnlyList<ParameterSpec> Parameters => inner.Parameters;

        public StrategyTraits Traits => inner.Traits;

        public void Merge(MergeTensorRequest request)
        {
            ArgumentNullException.ThrowIfNull(request);
            inner.Merge(request with { Weights = steering.Weights(request.Weights, request.LayerGroup) });
        }

        public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
        {
            ArgumentNullException.ThrowIfNull(tensor);
            var weights = steering.Weights(tensor.Weights, tensor.LayerGroup);
            return new Session(inner.BeginTensor(tensor with { Weights = weights }), weights);
        }

        private sealed class Session(ITensorMergeSession inner, IReadOnlyList<double> weights) : ITensorMergeSession
        {
            public bool BeginPass(int pass) => inner.BeginPass(pass);

            public void Observe(MergeTensorRequest block) => inner.Observe(block with { Weights = weights });

            public void Merge(MergeTensorRequest block) => inner.Merge(block with { Weights = weights });

            public void Dispose() => inner.Dispose();
        }
    }
}
