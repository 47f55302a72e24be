using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;

namespace SensMerging.Strategies.Interpolation;

/// <summary>Registers nearswap, multislerp, karcher, nuslerp and arcee_fusion.</summary>
public sealed class InterpolationPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        services.AddSingleton<IMergeStrategy, NearSwapStrategy>();
        services.AddSingleton<IMergeStrategy, MultiSlerpStrategy>();
        services.AddSingleton<IMergeStrategy, KarcherStrategy>();
        services.AddSingleton<IMergeStrategy, NuSlerpStrategy>();
        services.AddSingleton<IMergeStrategy, ArceeFusionStrategy>();
    }
}
