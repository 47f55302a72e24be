using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;

namespace SensMerging.Decorators.Sens;

/// <summary>Registers the <c>sens</c> decorator.</summary>
public sealed class SensPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IStrategyDecorator, SensDecorator>();
}
