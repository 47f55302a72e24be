using SensMerging.Abstractions;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Base of the task-arithmetic family of strategy plugins: each plugin names a <see cref="TaskArithmeticVariant"/>
/// and a description; the math is <see cref="TaskArithmeticCore"/>.
/// </summary>
public abstract class GeneralizedTaskArithmeticStrategy : IMergeStrategy
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
}
