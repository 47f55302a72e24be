using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;

namespace SensMerging.Strategies.Ties;

public sealed class TiesPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, TiesStrategy>();
}

/// <summary>TIES: keep the top-density task-vector entries by magnitude, elect a sign per entry, average the agreeing contributions.</summary>
public sealed class TiesStrategy() : GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties)
{
    public override string Description => "TIES: keep the top-density task-vector entries by magnitude, elect a sign per entry, average the agreeing contributions.";
}
