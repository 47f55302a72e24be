using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;

namespace SensMerging.Strategies.DareLinear;

public sealed class DareLinearPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, DareLinearStrategy>();
}

/// <summary>DARE: drop task-vector entries at random (probability 1 - density), rescale survivors, then add the weighted sum.</summary>
public sealed class DareLinearStrategy() : GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear)
{
    public override string Description => "DARE: drop task-vector entries at random (probability 1 - density), rescale survivors, then add the weighted sum.";
}
