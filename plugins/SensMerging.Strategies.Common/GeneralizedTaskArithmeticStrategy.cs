using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;

namespace SensMerging.Strategies.Common;

/// <summary>
/// One method of the task-arithmetic family as a strategy: the row of <see cref="TaskArithmeticVariant.All"/> gives its
/// name, description, parameters and traits; the math is <see cref="TaskArithmeticCore"/>. Every method also streams
/// (<see cref="IStreamingMergeStrategy"/>): the magnitude-trimming ones (ties, breadcrumbs, breadcrumbs_ties) gather
/// their exact thresholds in two statistics passes over the blocks, the others need none.
/// </summary>
public sealed class GeneralizedTaskArithmeticStrategy : IStreamingMergeStrategy
{
    private readonly ILogger _logger;

    public GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant variant, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(variant);
        if (!variant.Streams)
        {
            throw new ArgumentException($"'{variant.Name}' does not stream: use {nameof(WholeTensorTaskArithmeticStrategy)} (or {nameof(Create)}).", nameof(variant));
        }
        Variant = variant;
        _logger = logger ?? NullLogger.Instance;
        Parameters = variant.BuildParameters();
        Traits = variant.Traits;
    }

    public TaskArithmeticVariant Variant { get; }

    /// <summary>The strategy of a row of <see cref="TaskArithmeticVariant.All"/>: streaming when the method allows it.</summary>
    public static IMergeStrategy Create(TaskArithmeticVariant variant, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(variant);
        return variant.Streams ? new GeneralizedTaskArithmeticStrategy(variant, logger) : new WholeTensorTaskArithmeticStrategy(variant, logger);
    }

    public string Name => Variant.Name;

    public string Description => Variant.Description;

    public IReadOnlyList<ParameterSpec> Parameters { get; }

    public StrategyTraits Traits { get; }

    public void Merge(MergeTensorRequest request) => TaskArithmeticCore.Merge(request, Variant, _logger);

    /// <summary>Starts a block-wise merge of one tensor (parameters checked here).</summary>
    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor) => TaskArithmeticSession.Begin(Variant, tensor, _logger);
}

/// <summary>
/// A method of the task-arithmetic family that needs whole tensors (DELLA ranks magnitudes within whole rows): the host
/// hands it each tensor whole; the math is <see cref="TaskArithmeticCore"/>'s libtorch path.
/// </summary>
public sealed class WholeTensorTaskArithmeticStrategy : IMergeStrategy
{
    private readonly ILogger _logger;

    public WholeTensorTaskArithmeticStrategy(TaskArithmeticVariant variant, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(variant);
        Variant = variant;
        _logger = logger ?? NullLogger.Instance;
        Parameters = variant.BuildParameters();
        Traits = variant.Traits;
    }

    public TaskArithmeticVariant Variant { get; }

    public string Name => Variant.Name;

    public string Description => Variant.Description;

    public IReadOnlyList<ParameterSpec> Parameters { get; }

    public StrategyTraits Traits { get; }

    public void Merge(MergeTensorRequest request) => TaskArithmeticCore.Merge(request, Variant, _logger);
}
