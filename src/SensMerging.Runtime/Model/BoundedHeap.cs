using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace SensMerging.Runtime.Model;

/// <summary>
/// Makes freed tensor memory leave the process while a model is streamed under a memory budget. glibc's malloc raises
/// its mmap threshold each time a large mmap-ed block is freed (up to 32 MiB), after which blocks of that size come from
/// the heap and stay resident when freed; a streamed pass allocates and frees block-sized tensors over and over, so the
/// process kept several hundred MB of freed memory beyond its budget (measured: 863 MB peak RSS under a 650 MB budget
/// with 4 samples of 256 tokens; 638 MB with the threshold fixed). Fixing the threshold at 128 KiB (glibc's default,
/// <c>mallopt(M_MMAP_THRESHOLD)</c>, which also turns the raising off) returns every large block to the system when it
/// is freed, at the price of fresh pages for the next one. Done once per process, on Linux with glibc only.
/// </summary>
internal static partial class BoundedHeap
{
    /// <summary>glibc's <c>M_MMAP_THRESHOLD</c> parameter of <c>mallopt</c>.</summary>
    private const int MmapThresholdParameter = -3;

    /// <summary>glibc's default threshold: allocations from this size on are mmap-ed and unmapped when freed.</summary>
    private const int MmapThresholdBytes = 128 * 1024;

    private static int _applied;

    /// <summary>Fixes the mmap threshold (once per process); logs what it did.</summary>
    public static void Apply(ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(logger);
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref _applied, 1) != 0)
        {
            return;
        }
        try
        {
            if (mallopt(MmapThresholdParameter, MmapThresholdBytes) == 1)
            {
                LogFixed(logger, MmapThresholdBytes / 1024);
            }
            else
            {
                LogNotFixed(logger, "mallopt refused the setting");
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            LogNotFixed(logger, e.Message);
        }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int parameter, int value);

    [LoggerMessage(EventId = 7105, Level = LogLevel.Debug,
        Message = "Streaming under a memory budget: malloc's mmap threshold fixed at {KiB} KiB, so freed tensor memory is returned to the system.")]
    private static partial void LogFixed(ILogger logger, int kiB);

    [LoggerMessage(EventId = 7106, Level = LogLevel.Warning,
        Message = "Streaming under a memory budget: malloc's mmap threshold could not be fixed ({Reason}); freed tensor memory may stay resident beyond the budget.")]
    private static partial void LogNotFixed(ILogger logger, string reason);
}
