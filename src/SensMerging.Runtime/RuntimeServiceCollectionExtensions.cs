using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using SensMerging.Abstractions;
using SensMerging.Runtime.Calibration;

namespace SensMerging.Runtime;

public static class RuntimeServiceCollectionExtensions
{
    /// <summary>Registers <see cref="LlamaRuntime"/> as the <see cref="IModelRuntime"/> and the <see cref="CalibrationLoader"/>.</summary>
    public static IServiceCollection AddLlamaRuntime(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.TryAddSingleton<LlamaRuntime>();
        services.TryAddSingleton<IModelRuntime>(sp => sp.GetRequiredService<LlamaRuntime>());
        services.TryAddSingleton<CalibrationLoader>();
        return services;
    }
}
