using System.Runtime.InteropServices;

namespace SensMerging.Host.Cli;

/// <summary>
/// The process's one cancellation source. The first SIGINT (Ctrl-C) or SIGTERM cancels <see cref="Token"/>, which every
/// command passes down to each I/O path, and is remembered for the exit code (<see cref="ExitCodes"/>); a second one is
/// left to the runtime's default action, which ends the process at once (a merge's partial folder is then removed when
/// the registry next closes its record as ProcessEnded). The Generic Host's own console lifetime is replaced
/// (<see cref="CommandLifetime"/>) so that nothing else swallows the signals.
/// </summary>
public sealed class ProcessSignals : IDisposable
{
    private readonly CancellationTokenSource _cancellation = new();
    private readonly TextWriter _notices;
    private readonly List<PosixSignalRegistration> _registrations = [];
    private int _first; // the first signal as its PosixSignal value (those are non-zero); 0 before any

    private ProcessSignals(TextWriter notices) => _notices = notices;

    /// <summary>Cancelled by the first SIGINT or SIGTERM.</summary>
    public CancellationToken Token => _cancellation.Token;

    /// <summary>The first signal received, or null.</summary>
    public PosixSignal? Received => Volatile.Read(ref _first) is var first and not 0 ? (PosixSignal)first : null;

    /// <summary>Handles SIGINT and SIGTERM from now until disposed; <paramref name="notices"/> gets one line per signal.</summary>
    public static ProcessSignals Register(TextWriter notices)
    {
        ArgumentNullException.ThrowIfNull(notices);
        var signals = new ProcessSignals(notices);
        if (!OperatingSystem.IsBrowser() && !OperatingSystem.IsWasi())
        {
            signals._registrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, signals.Handle));
            signals._registrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, signals.Handle));
        }
        return signals;
    }

    /// <summary>
    /// The process exit code for a command that returned <paramref name="commandExitCode"/>: a command cancelled by a
    /// signal (<see cref="ExitCodes.Cancelled"/>) exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
    /// </summary>
    public int ExitCode(int commandExitCode) =>
        commandExitCode == ExitCodes.Cancelled && Received == PosixSignal.SIGTERM ? ExitCodes.Terminated : commandExitCode;

    /// <summary>The handler for each registered signal (public for tests, which cannot signal their own process).</summary>
    public void Handle(PosixSignalContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (Interlocked.CompareExchange(ref _first, (int)context.Signal, 0) == 0)
        {
            context.Cancel = true;
            _notices.WriteLine($"sensmerge: {context.Signal} received, stopping (send it again to end at once)");
            _cancellation.Cancel();
            return;
        }
        // Second signal: the runtime's default action (the process ends by the signal).
        context.Cancel = false;
    }

    public void Dispose()
    {
        foreach (var registration in _registrations)
        {
            registration.Dispose();
        }
        _cancellation.Dispose();
    }
}

/// <summary>Exit codes of <c>sensmerge</c>.</summary>
public static class ExitCodes
{
    public const int Success = 0;

    /// <summary>An error (one line on stderr says which).</summary>
    public const int Error = 1;

    /// <summary>Invalid settings.</summary>
    public const int InvalidSettings = 2;

    /// <summary>Cancelled by SIGINT (Ctrl-C): 128 + 2.</summary>
    public const int Cancelled = 130;

    /// <summary>Cancelled by SIGTERM: 128 + 15.</summary>
    public const int Terminated = 143;
}
