using System.Runtime.InteropServices;
using SensMerging.Host.Cli;

namespace SensMerging.Host.Tests.Cli;

/// <summary>The signal handler itself, called directly (a test cannot signal its own process without stopping the run).</summary>
public sealed class ProcessSignalsTests
{
    [Fact]
    public void The_first_signal_cancels_and_names_the_exit_code_and_a_second_is_left_to_the_runtime()
    {
        using var signals = ProcessSignals.Register(TextWriter.Null);
        Assert.Null(signals.Received);
        Assert.Equal(ExitCodes.Cancelled, signals.ExitCode(ExitCodes.Cancelled));

        var first = new PosixSignalContext(PosixSignal.SIGTERM);
        signals.Handle(first);
        Assert.True(first.Cancel);
        Assert.True(signals.Token.IsCancellationRequested);
        Assert.Equal(PosixSignal.SIGTERM, signals.Received);
        Assert.Equal(ExitCodes.Terminated, signals.ExitCode(ExitCodes.Cancelled));
        Assert.Equal(ExitCodes.Success, signals.ExitCode(ExitCodes.Success));
        Assert.Equal(ExitCodes.Error, signals.ExitCode(ExitCodes.Error));

        var second = new PosixSignalContext(PosixSignal.SIGINT) { Cancel = true };
        signals.Handle(second);
        Assert.False(second.Cancel);
        Assert.Equal(PosixSignal.SIGTERM, signals.Received);
    }
}
