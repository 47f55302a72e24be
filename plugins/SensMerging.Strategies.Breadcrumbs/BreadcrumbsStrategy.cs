using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;

namespace SensMerging.Strategies.Breadcrumbs;

public sealed class BreadcrumbsPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, BreadcrumbsStrategy>();
}

/// <summary>Model Breadcrumbs: drop the largest gamma and the smallest entries of each task vector, keep the band, then add the weighted sum.</summary>
public sealed class BreadcrumbsStrategy() : GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Breadcrumbs)
{
    public override string Description => "Model Breadcrumbs: drop the largest gamma and the smallest entries of each task vector, keep the band, then add the weighted sum.";
}
