using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;

namespace SensMerging.Decorators.Sens;

/// <summary>
/// An inner strategy (any <see cref="IMergeStrategy"/>) run with per-model weights w_i * c_i^l, where l is the layer
/// group of the tensor being merged. Traits and parameters are the inner strategy's; a tensor whose layer group has no
/// coefficient keeps its weights (c = 1), logged once per group. Use <see cref="Create"/>: when the inner strategy
/// streams (<see cref="IStreamingMergeStrategy"/>), the decorated one does too, so decorating never makes the host
/// hold whole tensors.
/// </summary>
public partial class SensDecoratedStrategy : IDecoratedStrategy
{
    private readonly string[] _experts;
    private readonly Dictionary<string, int> _expertIndex;
    private readonly Dictionary<string, int> _groupIndex;
    private readonly double[][] _coefficients;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, bool> _reportedGroups = new(StringComparer.Ordinal);

    /// <summary>The decorated form of <paramref name="inner"/>: streaming when the inner strategy streams.</summary>
    public static SensDecoratedStrategy Create(IMergeStrategy inner, DecoratorReport report, IReadOnlyList<string> experts, IReadOnlyList<string> groups, double[][] coefficients, ILogger logger) =>
        inner is IStreamingMergeStrategy streaming
            ? new SensDecoratedStreamingStrategy(streaming, report, experts, groups, coefficients, logger)
            : new SensDecoratedStrategy(inner, report, experts, groups, coefficients, logger);

    protected SensDecoratedStrategy(IMergeStrategy inner, DecoratorReport report, IReadOnlyList<string> experts, IReadOnlyList<string> groups, double[][] coefficients, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(report);
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(groups);
        ArgumentNullException.ThrowIfNull(coefficients);
        ArgumentNullException.ThrowIfNull(logger);
        if (coefficients.Length != experts.Count || coefficients.Any(row => row.Length != groups.Count))
        {
            throw new ArgumentException($"coefficients must be {experts.Count} experts x {groups.Count} groups", nameof(coefficients));
        }
        Inner = inner;
        Report = report;
        _experts = experts.ToArray();
        _expertIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < _experts.Length; i++)
        {
            _expertIndex.TryAdd(_experts[i], i);
        }
        _groupIndex = groups.Select((g, l) => (g, l)).ToDictionary(p => p.g, p => p.l, StringComparer.Ordinal);
        _coefficients = coefficients;
        _logger = logger;
    }

    public IMergeStrategy Inner { get; }

    public DecoratorReport Report { get; }

    public string Name => $"{SensDecorator.DecoratorName}({Inner.Name})";

    public string Description => $"Sens-Merging coefficients applied to {Inner.Name}: {Inner.Description}";

    public IReadOnlyList<ParameterSpec> Parameters => Inner.Parameters;

    public StrategyTraits Traits => Inner.Traits;

    /// <summary>The coefficient of expert <paramref name="expert"/> in layer group <paramref name="group"/> (1 when the group has none).</summary>
    public double Coefficient(int expert, string group) =>
        _groupIndex.TryGetValue(group, out var l) ? _coefficients[expert][l] : 1.0;

    /// <summary>The weights handed to the inner strategy for a tensor of <paramref name="group"/>: w_i * c_i^group.</summary>
    public double[] ScaledWeights(IReadOnlyList<string> modelNames, IReadOnlyList<double> weights, string group) =>
        ScaledWeights(modelNames, weights, group, null);

    /// <summary>
    /// The weights handed to the inner strategy: w_i * c_i^g_i, where g_i is model i's own layer group for the tensor
    /// (<paramref name="modelGroups"/>, contract 1.5: in a frankenmerge output layer j of a slice is layer
    /// <c>layer_range[0] + j</c> of each source, and each source is weighed by its coefficient for the layer it gives),
    /// else <paramref name="group"/>.
    /// </summary>
    public double[] ScaledWeights(IReadOnlyList<string> modelNames, IReadOnlyList<double> weights, string group, IReadOnlyList<string>? modelGroups)
    {
        ArgumentNullException.ThrowIfNull(modelNames);
        ArgumentNullException.ThrowIfNull(weights);
        if (weights.Count != modelNames.Count)
        {
            throw new ArgumentException($"{weights.Count} weights for {modelNames.Count} models", nameof(weights));
        }
        if (modelGroups is not null && modelGroups.Count != modelNames.Count)
        {
            throw new ArgumentException($"{modelGroups.Count} layer groups for {modelNames.Count} models", nameof(modelGroups));
        }
        var scaled = new double[weights.Count];
        var byName = modelNames.All(_expertIndex.ContainsKey);
        for (var r = 0; r < weights.Count; r++)
        {
            var own = modelGroups?[r] ?? group;
            var hasGroup = _groupIndex.TryGetValue(own, out var l);
            if (!hasGroup && _reportedGroups.TryAdd(own, true))
            {
                LogUnscoredGroup(_logger, own);
            }
            if (hasGroup && !byName && modelNames.Count != _experts.Length)
            {
                throw new InvalidOperationException(
                    $"sens: the merge's models ({string.Join(", ", modelNames)}) are not the scored experts ({string.Join(", ", _experts)}).");
            }
            // By name when every model is a scored expert; otherwise by position (same count, merge order).
            scaled[r] = hasGroup ? weights[r] * _coefficients[byName ? _expertIndex[modelNames[r]] : r][l] : weights[r];
        }
        return scaled;
    }

    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var weights = ScaledWeights(request.ModelNames, request.Weights, request.LayerGroup, request.ModelLayerGroups);
        Inner.Merge(request with { Weights = weights });
    }

    [LoggerMessage(EventId = 8011, Level = LogLevel.Warning, Message = "sens: layer group {Group} has no coefficient; its tensors keep their configured weights (c = 1)")]
    private static partial void LogUnscoredGroup(ILogger logger, string group);
}

/// <summary>
/// The decorated form of a streaming strategy: the tensor's weights (and every block's) are scaled by the coefficients
/// of its layer group before the inner strategy's session sees them.
/// </summary>
public sealed class SensDecoratedStreamingStrategy : SensDecoratedStrategy, IStreamingMergeStrategy
{
    private readonly IStreamingMergeStrategy _inner;

    internal SensDecoratedStreamingStrategy(IStreamingMergeStrategy inner, DecoratorReport report, IReadOnlyList<string> experts, IReadOnlyList<string> groups, double[][] coefficients, ILogger logger)
        : base(inner, report, experts, groups, coefficients, logger)
    {
        _inner = inner;
    }

    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var weights = ScaledWeights(tensor.ModelNames, tensor.Weights, tensor.LayerGroup, tensor.ModelLayerGroups);
        return new ScaledSession(_inner.BeginTensor(tensor with { Weights = weights }), weights);
    }

    /// <summary>The inner session with every block's weights replaced by the scaled ones.</summary>
    private sealed class ScaledSession(ITensorMergeSession inner, double[] weights) : ITensorMergeSession
    {
        public bool BeginPass(int pass) => inner.BeginPass(pass);

        public void Observe(MergeTensorRequest block)
        {
            ArgumentNullException.ThrowIfNull(block);
            inner.Observe(block with { Weights = weights });
        }

        public void Merge(MergeTensorRequest block)
        {
            ArgumentNullException.ThrowIfNull(block);
            inner.Merge(block with { Weights = weights });
        }

        public void Dispose() => inner.Dispose();
    }
}
