using Microsoft.Extensions.Hosting;

namespace SensMerging.Host;

/// <summary>
/// The host's lifetime for one command: it starts and stops with the command and handles no signals. The default
/// console lifetime would take SIGINT and SIGTERM for itself (stopping a host that no command waits on, so the signals
/// were swallowed); <see cref="Cli.ProcessSignals"/> owns them instead and cancels the command's token.
/// </summary>
public sealed class CommandLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
