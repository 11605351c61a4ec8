# The compiled build (setup.py) makes Scheduler an extension type: its fields become C struct
# members, read and written without a dictionary lookup. Every field Scheduler.__init__ sets is
# declared here, public so that Python code (EventLoop, observe/, tests) reads and writes them as
# before; subclasses (tidal.EventLoop) are ordinary classes with a __dict__ for their own fields.
cdef class Scheduler:
    cdef public object _ready
    cdef public list _timers
    cdef public object _timer_seq
    cdef public object _timer_cancelled_count
    cdef public object _stopping
    cdef public object _closed
    cdef public object _thread_id
    cdef public object _debug
    cdef public object _clock_resolution
    cdef public object _exception_handler
    cdef public object _current_handle
    cdef public object _coroutine_origin_tracking_enabled
    cdef public object _coroutine_origin_tracking_saved_depth
    cdef public object _poller
    cdef public object _wakeup
    cdef public object _io_registrations
    cdef public object _hooks
    cdef public object _instrumented
    cdef public object slow_callback_duration
    cdef dict __dict__
    cdef object __weakref__
