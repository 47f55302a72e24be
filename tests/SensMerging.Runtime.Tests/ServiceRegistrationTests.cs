using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Runtime.Calibration;

namespace SensMerging.Runtime.Tests;

public sealed class ServiceRegistrationTests
{
    [Fact]
    public void AddLlamaRuntime_registers_the_runtime_and_the_calibration_loader_once()
    {
        var services = new ServiceCollection();
        services.AddLlamaRuntime().AddLlamaRuntime();
        Assert.Single(services, d => d.ServiceType == typeof(IModelRuntime) && d.Lifetime == ServiceLifetime.Singleton);
        Assert.Single(services, d => d.ServiceType == typeof(LlamaRuntime));
        Assert.Single(services, d => d.ServiceType == typeof(CalibrationLoader));
    }
}
