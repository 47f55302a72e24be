using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;

namespace SensMerging.Strategies.TaskArithmetic;

public sealed class TaskArithmeticPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, TaskArithmeticStrategy>();
}

/// <summary>Base plus lambda times the weighted sum of the task vectors (x_i - base).</summary>
public sealed class TaskArithmeticStrategy() : GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic)
{
    public override string Description => "Base plus lambda times the weighted sum of the task vectors (x_i - base).";
}
