using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;

namespace SensMerging.Strategies.BreadcrumbsTies;

public sealed class BreadcrumbsTiesPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, BreadcrumbsTiesStrategy>();
}

/// <summary>Model Breadcrumbs band selection followed by TIES sign election.</summary>
public sealed class BreadcrumbsTiesStrategy() : GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.BreadcrumbsTies)
{
    public override string Description => "Model Breadcrumbs band selection followed by TIES sign election.";
}
