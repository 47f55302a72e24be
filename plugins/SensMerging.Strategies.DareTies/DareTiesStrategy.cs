using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;

namespace SensMerging.Strategies.DareTies;

public sealed class DareTiesPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, DareTiesStrategy>();
}

/// <summary>DARE random drop and rescale, then TIES sign election over the weighted task vectors.</summary>
public sealed class DareTiesStrategy() : GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies)
{
    public override string Description => "DARE random drop and rescale, then TIES sign election over the weighted task vectors.";
}
