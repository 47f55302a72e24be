using SensMerging.Abstractions;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Base of the task-arithmetic family of strategy plugins: each plugin names a <see cref="TaskArithmeticVariant"/>
/// and a description; the math is <see cref="TaskArithmeticCore"/>. Every variant also streams
/// (<see cref="IStreamingMergeStrategy"/>): the magnitude-trimming ones (ties, breadcrumbs, breadcrumbs_ties) gather
/// their exact thresholds in two statistics passes over the blocks, the others need none.
/// </summary>
public abstract class GeneralizedTaskArithmeticStrategy : IStreamingMergeStrategy
{
    protected GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant variant)
    {
        ArgumentNullException.ThrowIfNull(variant);
        Variant = variant;
        Parameters = variant.BuildParameters();
        Traits = variant.Traits;
    }

    public TaskArithmeticVariant Variant { get; }

    public string Name => Variant.Name;

    public abstract string Description { get; }

    public IReadOnlyList<ParameterSpec> Parameters { get; }

    public StrategyTraits Traits { get; }

    public void Merge(MergeTensorRequest request) => TaskArithmeticCore.Merge(request, Variant);

    /// <summary>Starts a block-wise merge of one tensor (parameters checked here).</summary>
    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor) => TaskArithmeticSession.Begin(Variant, tensor);
}
