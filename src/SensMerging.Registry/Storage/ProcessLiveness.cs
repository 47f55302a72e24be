using System.ComponentModel;
using System.Diagnostics;

namespace SensMerging.Registry.Storage;

/// <summary>Identifies this process and tells whether a recorded owner process still runs.</summary>
internal static class ProcessLiveness
{
    private static readonly Lazy<ProcessOwner> CurrentOwner = new(() =>
    {
        using var self = Process.GetCurrentProcess();
        return new ProcessOwner(Environment.ProcessId, Environment.MachineName, StartTimeUtc(self));
    });

    public static ProcessOwner Current => CurrentOwner.Value;

    /// <summary>
    /// True when the owner is known to be gone: same machine, and no process with that PID, or one with another
    /// start time (the PID was reused). Owners on other machines are never judged gone.
    /// </summary>
    public static bool IsGone(ProcessOwner owner)
    {
        if (!string.Equals(owner.MachineName, Environment.MachineName, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        if (owner.ProcessId == Environment.ProcessId)
        {
            return !SameStart(owner.ProcessStartedAt, Current.ProcessStartedAt);
        }
        try
        {
            using var process = Process.GetProcessById(owner.ProcessId);
            if (process.HasExited)
            {
                return true;
            }
            return !SameStart(owner.ProcessStartedAt, StartTimeUtc(process));
        }
        catch (ArgumentException)
        {
            // No process with that id.
            return true;
        }
        catch (InvalidOperationException)
        {
            // The process exited while we looked at it.
            return true;
        }
        catch (Win32Exception)
        {
            // Exists but cannot be inspected (another user): treat as alive.
            return false;
        }
    }

    public static DateTime StartTimeUtc(Process process) => process.StartTime.ToUniversalTime();

    // Start times are derived from clock ticks since boot; allow for rounding between readers.
    private static bool SameStart(DateTime a, DateTime b) => Math.Abs((a - b).TotalSeconds) < 2.0;
}
